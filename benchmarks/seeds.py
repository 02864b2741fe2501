"""Wall time of training S seeds as one computation (``pcl.train_many``) vs one seed.

The paper's MNIST MLP (784-500-500-500-500-10 by default), PC with Euler T = 50 (dt = 0.1)
and BP, SGD, batch 64, float32, Gaussian stand-in data of MNIST's shape. Each row: median ms
per training step (over --repeats timed calls of --steps steps each, after compilation) for 1
seed with ``pcl.train``, 1 seed with ``pcl.train_many`` and S seeds with ``pcl.train_many``,
and S seeds with ``pcl.train_many`` in both forms (``vectorize=True``: one vmapped
computation; ``False``: the seeds one after the other inside the compiled call), and the
ratio S-seeds / 1-seed for the backend's default form. The rows are timed round-robin in one
process. The target on a GPU is a ratio <= 1.5 for S = 5; on a CPU, which is compute-bound
already at one seed, expect about S.

    python benchmarks/seeds.py [--seeds 5] [--width 500] [--steps 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import optax

sys.path.insert(0, str(Path(__file__).parent))
import pclandscape as pcl  # noqa: E402
from _timing import device_name  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--hidden", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    widths = [784] + [args.width] * args.hidden + [10]
    x = jax.random.normal(jax.random.key(1), (args.batch * 16, 784))
    y = jax.nn.one_hot(jax.random.randint(jax.random.key(2), (args.batch * 16,), 0, 10), 10)
    opt = optax.sgd(1e-3)
    keys = jax.random.split(jax.random.key(0), args.seeds)
    make = lambda k: pcl.MLP(k, widths, "tanh", init_std=5e-3)  # noqa: E731
    one = make(keys[0])
    one_stacked = eqx.filter_vmap(make)(keys[:1])
    many = eqx.filter_vmap(make)(keys)
    print(f"# ms per training step, {widths}, batch {args.batch}, {args.steps} steps per timed call, device {device_name()}")
    vec = jax.default_backend() != "cpu"  # train_many's default form on this backend
    form = "vmap" if vec else "map"
    print(f"{'rule':<4} {'train 1 seed':>13} {'train_many 1':>13} {f'many {args.seeds} vmap':>13} {f'many {args.seeds} map':>13} "
          f"{f'ratio S/1 ({form}, default)':>24}")
    for rule in ("bp", "pc"):
        solver = pcl.Euler(dt=0.1, steps=50) if rule == "pc" else None
        common = dict(rule=rule, optimizer=opt, solver=solver, steps=args.steps, batch_size=args.batch, progress=False,
                      steps_per_call=args.steps)
        fns = {
            "single": lambda: pcl.train(one, (x, y), key=keys[0], **common)[0],
            "many1": lambda: pcl.train_many(one_stacked, (x, y), keys=keys[:1], **common)[0],
            "vmap": lambda: pcl.train_many(many, (x, y), keys=keys, vectorize=True, **common)[0],
            "map": lambda: pcl.train_many(many, (x, y), keys=keys, vectorize=False, **common)[0],
        }
        for f in fns.values():
            jax.block_until_ready(f())  # compile
        times = {k: [] for k in fns}
        for _ in range(args.repeats):
            for k, f in fns.items():
                t = time.perf_counter()
                jax.block_until_ready(f())
                times[k].append(1e3 * (time.perf_counter() - t) / args.steps)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{rule:<4} {med['single']:>13.2f} {med['many1']:>13.2f} {med['vmap']:>13.2f} {med['map']:>13.2f} "
              f"{med[form] / med['single']:>24.2f}", flush=True)


if __name__ == "__main__":
    main()
