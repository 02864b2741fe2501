"""Wall time of a learning-rate x seed grid as one computation (the ``fair`` experiment's unit).

``pcl.train_many`` over ``--lrs x --seeds`` members (``optax.sgd(1.0)``, the learning rate as
each member's gradient scale), BP and PC (``ExactLinear``), linear MLPs of width ``--width``
and ``--hidden`` hidden layers on MNIST-1D (generated, 40 inputs), batch 64, ``--steps`` steps.
Printed, timed round-robin in one process (median of ``--repeats``, compilation excluded):

* the grid, vmapped (``vectorize=True``) and mapped (``False``), seconds per call; PC with
  ``ExactLinear()`` (``method="auto"``: the output-space route when ``d_y`` = 10 is below the
  width) and, vmapped, with ``ExactLinear(method="activity")`` (the block-tridiagonal solve),
  with their ratio;
* the first batch of a run's shuffled index stream, drawing permutations for the epochs the
  run needs (``total_steps``) vs for 256 epochs (what ``train`` / ``train_many`` drew before
  they passed the run length), milliseconds per member.

    python benchmarks/lr_grid.py [--lrs 12] [--seeds 5] [--width 32] [--hidden 3] [--steps 400] [--repeats 3]
    python benchmarks/lr_grid.py --width 500 --hidden 4 --steps 10   # the full-size fair grid (over 20 min on 2 cores: the mapped runs)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).parent))
import pclandscape as pcl  # noqa: E402
from _timing import device_name, interleaved_median_ms  # noqa: E402
from pclandscape.training._batches import index_stream  # noqa: E402  (the stream is what is timed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lrs", type=int, default=12)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--hidden", type=int, default=3)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    ds = pcl.data.mnist1d()
    x, y = ds.x_train, ds.y_train
    m = a.lrs * a.seeds
    keys = jax.vmap(jax.random.key)(jnp.arange(m))
    nets = eqx.filter_vmap(lambda k: pcl.MLP(k, [x.shape[1]] + [a.width] * a.hidden + [y.shape[1]], "linear", init_std=5e-3))(keys)
    lrs = np.repeat(np.logspace(-4, 1.5, a.lrs), a.seeds)
    opt = optax.sgd(1.0)
    print(f"device {device_name()}; {a.lrs} lrs x {a.seeds} seeds = {m} members, width {a.width}, H = {a.hidden}, {a.steps} steps")

    def grid(rule, vec, method="auto"):
        return lambda: pcl.train_many(nets, (x, y), rule=rule, optimizer=opt, steps=a.steps, batch_size=64, keys=keys,
                                      grad_scale=lrs, solver=pcl.ExactLinear(method=method) if rule == "pc" else None,
                                      vectorize=vec, on_divergence="stop", steps_per_call=100, progress=False)[0]

    fns = {f"{rule} vectorize={vec}": grid(rule, vec) for rule in ("bp", "pc") for vec in (True, False)}
    fns["pc activity vectorize=True"] = grid("pc", True, "activity")
    t = interleaved_median_ms(fns, repeats=a.repeats, warmup=1)
    for k, v in t.items():
        print(f"  grid {k:26s} {v / 1e3:8.2f} s")
    print(f"  PC, ExactLinear block-tridiagonal / auto: {t['pc activity vectorize=True'] / t['pc vectorize=True']:.2f}x;"
          f" PC auto / BP:"
          f" {t['pc vectorize=True'] / t['bp vectorize=True']:.2f}x")
    key = jax.random.key(0)
    streams = {
        "index stream, run length": lambda: np.asarray(next(index_stream(x.shape[0], 64, key, 0, a.steps))),
        "index stream, 256 epochs": lambda: np.asarray(next(index_stream(x.shape[0], 64, key, 0))),
    }
    t = interleaved_median_ms(streams, repeats=max(a.repeats, 5), warmup=1)
    for k, v in t.items():
        print(f"  {k:26s} {v:8.1f} ms per member")
    print(f"  ratio 256 epochs / run length: {t['index stream, 256 epochs'] / t['index stream, run length']:.1f}x")


if __name__ == "__main__":
    main()
