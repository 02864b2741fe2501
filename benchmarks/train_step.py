"""ms per training step, BP vs PC, on the paper's MNIST MLP (784-500-500-500-500-10, batch 64).

Rows: BP (`pcl.bp_step`), PC with Euler T=50 dt=0.1 (`pcl.pc_step`), PC with ExactLinear
(linear net only), and the *floor*: a plain hand-written PC step (activities in one
`lax.fori_loop`, one jit, no diagnostics) measured in the same run. Float32, median of
`--repeats` steps after compilation, timed round-robin. Prints a table with the PC/BP and
PC/floor ratios.

    python benchmarks/train_step.py [--repeats 30] [--batch 64] [--width 500]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(Path(__file__).parent))
import pclandscape as pcl  # noqa: E402
from _timing import device_name, interleaved_median_ms  # noqa: E402


def floor_step(activation, dt, steps, lr):
    """A plain PC step written by hand: no validation, no diagnostics."""
    act = {"linear": lambda a: a, "tanh": jnp.tanh}[activation]

    def energy(ws, zs, x, y):
        full = [x, *zs, y]
        e = 0.0
        for l, w in enumerate(ws):
            h = full[l] if l == 0 else act(full[l])
            e = e + jnp.sum((full[l + 1] - h @ w.T) ** 2)
        return 0.5 * e

    @jax.jit
    def step(ws, x, y):
        zs, h = [], x
        for l, w in enumerate(ws[:-1]):
            h = (h if l == 0 else act(h)) @ w.T
            zs.append(h)
        gz = jax.grad(energy, argnums=1)

        def body(_, zs):
            g = gz(ws, zs, x, y)
            return [z - dt * gi for z, gi in zip(zs, g)]

        zs = jax.lax.fori_loop(0, steps, body, zs)
        gw = jax.grad(lambda ws: energy(ws, zs, x, y) / x.shape[0])(ws)
        return [w - lr * g for w, g in zip(ws, gw)]

    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--steps", type=int, default=50, help="Euler inference steps T")
    p.add_argument("--activations", nargs="+", default=["linear", "tanh"])
    args = p.parse_args(argv)

    widths = [784] + [args.width] * 4 + [10]
    key = jax.random.key(0)
    x = jax.random.normal(jax.random.key(1), (args.batch, 784))
    y = jax.nn.one_hot(jax.random.randint(jax.random.key(2), (args.batch,), 0, 10), 10)
    opt = optax.sgd(1e-3)
    euler = pcl.Euler(dt=0.1, steps=args.steps)
    print(f"device: {device_name()}  net: {widths}  batch {args.batch}  float32  median of {args.repeats}")
    print(f"{'activation':<10} {'method':<28} {'ms/step':>9} {'/BP':>7} {'/floor':>7}")
    for activation in args.activations:
        net = pcl.MLP(key, widths, activation, init_std=5e-3**0.5)
        state = pcl.init_opt_state(net, opt)
        ws = pcl.weights(net)
        floor = floor_step(activation, 0.1, args.steps, 1e-3)
        fns = {
            "BP (bp_step)": lambda: pcl.bp_step(net, state, x, y, opt),
            f"PC Euler T={args.steps} (pc_step)": lambda: pcl.pc_step(net, state, x, y, opt, euler),
            f"floor: hand-written PC T={args.steps}": lambda: floor(ws, x, y),
        }
        res = interleaved_median_ms(fns, repeats=args.repeats)
        if activation == "linear":
            # Timed on its own: LAPACK's worker threads keep spinning after a Cholesky and
            # slow down whatever runs next on a small machine, which would skew a round-robin.
            res["PC ExactLinear (pc_step)"] = interleaved_median_ms(
                {"x": lambda: pcl.pc_step(net, state, x, y, opt, pcl.ExactLinear())}, repeats=args.repeats
            )["x"]
        bp = res["BP (bp_step)"]
        fl = res[f"floor: hand-written PC T={args.steps}"]
        for name, ms in res.items():
            print(f"{activation:<10} {name:<28} {ms:>9.2f} {ms / bp:>7.1f} {ms / fl:>7.2f}")


if __name__ == "__main__":
    main()
