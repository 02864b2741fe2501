"""Wall time of ``pclandscape reproduce --quick`` with the experiments one after another
(``--jobs 1``) and two at a time in worker processes (``--jobs 2``), side by side.

Each timed run is a fresh ``pclandscape reproduce --quick --force --only LIST --jobs N`` into
its own temporary folder (compilation included, as a user sees it); the two settings
alternate, ``--repeats`` times each, and the script prints the median wall time of each and
their ratio. It also checks that both settings wrote the same claims (id, measured value,
verdict) for every experiment.

    python benchmarks/jobs.py [--only fig1,fig3,fig4,fig12] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(names: str, jobs: int, out: Path) -> float:
    cmd = [sys.executable, "-m", "pclandscape", "reproduce", "--quick", "--force", "--exit-zero", "--only", names,
           "--out", str(out), "--jobs", str(jobs)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PCLANDSCAPE_PROGRESS": "0"})
    return time.perf_counter() - start


def _claims(out: Path, names: list[str]) -> dict:
    return {n: [(c["id"], c["measured"], c["passed"]) for c in json.loads((out / n / "results.json").read_text())["claims"]]
            for n in names}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="fig1,fig3,fig4,fig12", help="experiments (comma-separated)")
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    times = {1: [], 2: []}
    claims = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for jobs in (1, 2):
                out = Path(tmp) / f"jobs{jobs}_{r}"
                times[jobs].append(_run(args.only, jobs, out))
                claims[jobs] = _claims(out, names)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"# pclandscape reproduce --quick --only {args.only}, {os.cpu_count()} CPU cores, median of {args.repeats}")
    print(f"{'--jobs':>7} {'wall (s)':>9}")
    print(f"{1:>7} {one:>9.1f}")
    print(f"{2:>7} {two:>9.1f}")
    print(f"ratio jobs 2 / jobs 1: {two / one:.2f}")
    print(f"same claims (id, measured, verdict) in both: {claims[1] == claims[2]}")


if __name__ == "__main__":
    main()
