"""Overhead and speed-up of ``pclandscape sweep`` on the embedded local Ray.

One grid of ``--lrs x --seeds`` cells of fig2's chains (quick config, shrunk by the ``TINY``
overrides, ``chain_steps=--steps``) is run three ways, each in a fresh process and folder, in
one session, ``--repeats`` times round-robin:

* **sequential**: one process running the cells one after another with
  ``runner.run_experiment`` (a for loop over ``pclandscape run``, without its start-up per
  cell);
* **sweep, 1 worker**: ``pclandscape sweep --num-cpus 1``;
* **sweep, 2 workers**: ``pclandscape sweep --num-cpus 2``.

Printed: median wall times, the sweep's overhead per cell beyond the cells' own work
((1-worker sweep - sequential) / cells), the speed-up of 2 workers over sequential, and the
bound on that speed-up set by the sequential run's own CPU use (CPU seconds / wall seconds:
JAX and XLA already keep more than one core busy part of the time).

    python benchmarks/sweep.py [--lrs 8] [--seeds 2] [--steps 100] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = {"chain_depths": "1", "wide_steps": "20", "wide_seeds": "0", "resolution": "5", "n_train": "128",
        "n_test": "64", "wide_T": "10", "protocols": "fair"}


def _spec(path: Path, lrs, seeds, steps) -> None:
    lines = ['experiment = "fig2"', "quick = true", f"seeds = {list(seeds)}", "[set]"]
    lines += [f'{k} = "{v}"' for k, v in {**TINY, "chain_steps": str(steps)}.items()]
    lines += ["[grid]", f"chain_lr = {json.dumps(lrs)}"]
    path.write_text("\n".join(lines) + "\n")


_SEQUENTIAL = """
import sys, json
from pclandscape.experiments import runner, sweep
spec = sweep.load_spec(sys.argv[1])
for cell in spec.cells():
    runner.run_experiment(cell.experiment, cell.config, sweep.cell_dir(sys.argv[2], cell), progress=False, quick=True)
"""


def _timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=dict(os.environ, PCLANDSCAPE_PROGRESS="0"))
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lrs", type=int, default=8)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    lrs = [round(0.1 + 0.05 * i, 3) for i in range(args.lrs)]
    n = args.lrs * args.seeds
    exe = Path(sys.executable)
    cli = str(exe.parent / "pclandscape")
    times: dict[str, list[float]] = {"sequential": [], "sweep, 1 worker": [], "sweep, 2 workers": []}
    cpu: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "grid.toml"
        _spec(spec, lrs, range(args.seeds), args.steps)
        for r in range(args.repeats):
            wall, busy = _timed([str(exe), "-c", _SEQUENTIAL, str(spec), f"{tmp}/seq{r}"])
            times["sequential"].append(wall)
            cpu.append(busy / wall)
            times["sweep, 1 worker"].append(_timed([cli, "sweep", str(spec), "--out", f"{tmp}/one{r}", "--num-cpus", "1"])[0])
            times["sweep, 2 workers"].append(_timed([cli, "sweep", str(spec), "--out", f"{tmp}/two{r}", "--num-cpus", "2"])[0])
            print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in times.items()), flush=True)
        walls = [json.loads((Path(tmp) / "one0" / "cells" / c / "fig2" / "results.json").read_text())["wall_time_s"]
                 for c in os.listdir(Path(tmp) / "one0" / "cells")]
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{n} cells (fig2 chains, {args.lrs} learning rates x {args.seeds} seeds, {args.steps} steps); "
          f"{os.cpu_count()} cores; median of {args.repeats}")
    print(f"{'run':18s} {'wall (s)':>9s}")
    for k, v in med.items():
        print(f"{k:18s} {v:9.1f}")
    print(f"cell's own run (runner, in a worker): median {statistics.median(walls):.2f} s")
    print(f"sweep overhead per cell, 1 worker vs sequential: {(med['sweep, 1 worker'] - med['sequential']) / n:+.2f} s "
          f"(target <= 1 s)")
    cores = statistics.median(cpu)
    print(f"speed-up, 2 workers vs sequential: {med['sequential'] / med['sweep, 2 workers']:.2f}x (target >= 1.7x); "
          f"the sequential run kept {cores:.2f} cores busy, so 2 cores allow at most {min(2, os.cpu_count()) / cores:.2f}x")


if __name__ == "__main__":
    main()
