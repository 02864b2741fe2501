"""Wall time of ``pclandscape reproduce --quick`` and, on request, of full-size experiments.

Runs the reproduction in a fresh output folder (``--force``: nothing is skipped) in this
process, then prints one row per experiment (wall time from its results.json, paper claims
passed / total) and the total, including process start-up and report writing.

    python benchmarks/reproduce.py                      # the quick reproduction (make demo)
    python benchmarks/reproduce.py --full fig5 fig1     # full-size configs (long: hours on a CPU)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import device_name  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", nargs="*", metavar="NAME", help="run these experiments at full size instead of the quick reproduction")
    p.add_argument("--out", help="output folder (default: a temporary folder)")
    args = p.parse_args(argv)
    from pclandscape import cli
    from pclandscape.experiments import runner

    out = Path(args.out or tempfile.mkdtemp(prefix="pcl-bench-"))
    names = args.full if args.full is not None else list(runner.EXPERIMENTS)
    argv = ["reproduce", "--out", str(out), "--force", "--only", ",".join(names)]
    if args.full is None:
        argv.append("--quick")
    t = time.perf_counter()
    rc = cli.main(argv)
    total = time.perf_counter() - t
    print(f"\n# {'quick reproduction' if args.full is None else 'full-size experiments'} on {device_name()}, results in {out}")
    print(f"{'experiment':<10} {'wall (s)':>9} {'paper claims':>13}")
    for name in names:
        path = out / name / "results.json"
        if not path.is_file():
            print(f"{name:<10} {'-':>9} {'not run':>13}")
            continue
        r = json.loads(path.read_text())
        paper = [c for c in r["claims"] if c["category"] == "paper"]
        print(f"{name:<10} {r['wall_time_s']:>9.1f} {sum(bool(c['passed']) for c in paper):>6}/{len(paper):<6}")
    print(f"{'total':<10} {total:>9.1f}   (exit code {rc}, incl. start-up of each experiment and the report)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
