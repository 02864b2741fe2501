"""What the members that diverge cost a learning-rate grid: the ``fair`` experiment's tanh grid.

``pcl.train_many`` over ``fair``'s grid (its nets, batch orders and 12 learning rates, 1e-4 ...
31.6, a half decade apart) x ``--seeds`` seeds, PC with ``pcl.Newton(tol=1e-5)`` (``fair``'s solver for nonlinear nets), tanh MLPs of
width ``--width`` and ``--hidden`` hidden layers, init std 5e-3, batch 64, ``--steps`` steps,
members mapped one after the other (``vectorize=False``, the CPU default), on Fashion-MNIST
when Debian's ``dataset-fashion-mnist`` is installed, else MNIST-1D. The largest learning
rates diverge within a few dozen steps; ``on_divergence="stop"`` freezes them. Printed: the
seconds per step after the first ``--warm`` steps (compilation excluded: the difference of a
``--warm``-step and a ``--steps``-step run), the member-steps recorded, and when the members
diverged.

Run it on two source trees, alternately, to compare them (e.g. before and after a change):

    python benchmarks/grid_divergence.py [--width 500] [--hidden 3] [--steps 110] [--warm 10] [--seeds 5]
    PYTHONPATH=OTHER_CHECKOUT/src python benchmarks/grid_divergence.py ...
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).parent))
import pclandscape as pcl  # noqa: E402
from _timing import device_name  # noqa: E402
from pclandscape.experiments import fair  # noqa: E402  (its grid is what is timed)


def _data():
    try:
        return pcl.data.load("fashion_mnist")
    except Exception:  # noqa: BLE001 - the benchmark runs on whatever data this machine has
        return pcl.data.mnist1d()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--hidden", type=int, default=3)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--steps", type=int, default=110)
    p.add_argument("--warm", type=int, default=10)
    a = p.parse_args()
    ds = _data()
    x, y = ds.x_train, ds.y_train
    cfg = fair.Config(seeds=tuple(range(a.seeds)), width=a.width)
    nets = fair._grid_nets(cfg, [x.shape[1]] + [a.width] * a.hidden + [y.shape[1]], "tanh")
    keys = fair._grid_keys(cfg)
    lrs = np.repeat(np.asarray(cfg.lrs), a.seeds)
    opt = optax.sgd(1.0)

    def run(steps):
        t = time.perf_counter()
        _, hists = pcl.train_many(nets, (x, y), rule="pc", solver=pcl.Newton(tol=1e-5), optimizer=opt, steps=steps,
                                  batch_size=cfg.batch, keys=keys, grad_scale=lrs, on_divergence="stop", steps_per_call=10,
                                  vectorize=False, progress=False)
        return time.perf_counter() - t, hists

    t_warm, _ = run(a.warm)
    t_all, hists = run(a.steps)
    diverged = {float(lrs[i]): [] for i in range(len(lrs))}
    for i, h in enumerate(hists):
        if "diverged_at" in h.meta:
            diverged[float(lrs[i])].append(int(h.meta["diverged_at"]))
    print(f"pclandscape from {Path(pcl.__file__).parent}; device {device_name()}; data {ds.name}; "
          f"{len(cfg.lrs)} lrs x {a.seeds} seeds, tanh, width {a.width}, H = {a.hidden}")
    print(f"  seconds per step, steps {a.warm}-{a.steps}: {(t_all - t_warm) / (a.steps - a.warm):.3f}")
    print(f"  member-steps recorded: {sum(len(h) for h in hists)} of {len(hists) * a.steps}")
    print("  diverged (lr: steps): " + "; ".join(f"{lr:g}: {v}" for lr, v in diverged.items() if v))


if __name__ == "__main__":
    main()
