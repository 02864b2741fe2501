"""Wall time of ``pclandscape reproduce --quick`` with the experiments one after another
(``--jobs 1``) and two at a time in worker processes (``--jobs 2``, each worker bound to its
own share of the CPUs, as by default, and unbound: ``PCLANDSCAPE_BIND_WORKERS=0``), side by side.

Each timed run is a fresh ``pclandscape reproduce --quick --force --only LIST --jobs N`` into
its own temporary folder, with the persistent compilation cache off (compilation included, as
a user sees it on a fresh machine); the three settings alternate, ``--repeats`` times each,
and the script prints the median wall time of each and their ratios to ``--jobs 1``. It also
checks that every setting wrote the same claims (id, measured value, verdict) for every
experiment.

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


# label: (--jobs, PCLANDSCAPE_BIND_WORKERS)
_SETTINGS = {"1": (1, "1"), "2 bound": (2, "1"), "2 unbound": (2, "0")}


def _run(names: str, setting: str, out: Path) -> float:
    jobs, bind = _SETTINGS[setting]
    cmd = [sys.executable, "-m", "pclandscape", "reproduce", "--quick", "--force", "--exit-zero", "--only", names,
           "--out", str(out), "--jobs", str(jobs)]
    env = {**os.environ, "PCLANDSCAPE_PROGRESS": "0", "JAX_COMPILATION_CACHE_DIR": "", "PCLANDSCAPE_BIND_WORKERS": bind}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
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
    times = {s: [] for s in _SETTINGS}
    claims = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for k, setting in enumerate(_SETTINGS):
                out = Path(tmp) / f"setting{k}_{r}"
                times[setting].append(_run(args.only, setting, out))
                claims[setting] = _claims(out, names)
    med = {s: statistics.median(t) for s, t in times.items()}
    print(f"# pclandscape reproduce --quick --only {args.only}, {os.cpu_count()} CPU cores, compilation cache off, "
          f"median of {args.repeats}")
    print(f"{'--jobs':>10} {'wall (s)':>9} {'/ jobs 1':>9}")
    for s, t in med.items():
        print(f"{s:>10} {t:>9.1f} {t / med['1']:>9.2f}")
    same = all(c == claims["1"] for c in claims.values())
    print(f"same claims (id, measured, verdict) in every setting: {same}")


if __name__ == "__main__":
    main()
