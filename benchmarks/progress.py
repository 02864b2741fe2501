"""Microseconds per progress-bar update: pclandscape's bar against tqdm (when installed).

Issue: use ``tqdm`` unless the measurement says otherwise. Both draw to a redirected stderr
at most every 0.2 s with a ``loss=`` postfix; medians of --repeats rounds of --updates
updates, the two timed alternately in one process. Also counts what each writes to a
non-terminal log over one run. tqdm is not a dependency: install it beside the project
(``pip install tqdm``) to get its row.

    python benchmarks/progress.py [--updates 200000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time

from pclandscape._progress import Progress


def _ours(n: int) -> None:
    bar = Progress(n, enabled=True, interval=0.2)
    for _ in range(n):
        bar.update(1, loss=0.5)
    bar.close()


def _tqdm(n: int) -> None:
    import tqdm

    bar = tqdm.tqdm(total=n, file=sys.stderr, mininterval=0.2)
    for _ in range(n):
        bar.update(1)
        bar.set_postfix(loss=0.5, refresh=False)
    bar.close()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--updates", type=int, default=200_000)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    try:
        import tqdm  # noqa: F401

        runs = {"pclandscape": _ours, "tqdm": _tqdm}
    except ImportError:
        runs = {"pclandscape": _ours}
        print("tqdm is not installed: its row is skipped (pip install tqdm)")
    times = {k: [] for k in runs}
    logs = {}
    err = sys.stderr
    try:
        for _ in range(a.repeats):
            for name, fn in runs.items():
                sys.stderr = buf = io.StringIO()
                t = time.perf_counter()
                fn(a.updates)
                times[name].append((time.perf_counter() - t) / a.updates * 1e6)
                logs[name] = buf.getvalue()
    finally:
        sys.stderr = err
    print(f"{'bar':<12} {'us/update (median)':>19} {'lines in a log':>15} {'carriage returns':>17}")
    for name, ts in times.items():
        print(f"{name:<12} {statistics.median(ts):>19.2f} {logs[name].count(chr(10)):>15} {logs[name].count(chr(13)):>17}")


if __name__ == "__main__":
    main()
