"""Inference residuals along a PC training run of a deep residual MLP: the training solver
(``pcl.Newton(tol)``, 30 iterations) against ``pcl.Newton(tol, max_steps=300)`` on the same
weights and batch at every step.

The net and protocol of a ``mupc`` cell (``pclandscape run mupc``): ``784 - W x (L-1) - 10``
residual tanh MLP under muPC (``--param``), init key 0, batches of 64 drawn with key 1 from
Fashion-MNIST's training set, plain SGD with step ``--lr`` on Eq 2. Per step the 300-iteration
solve runs first on the batch and weights the training step sees (``pcl.train``'s
``metrics``); the step then trains with the 30-iteration one. Printed: every step whose
training residual is above ``tol``, with the 300-iteration solve's residual and iterations
(fewer than 300 and above ``tol``: ``pcl.Newton`` stopped at the rounding floor, see its
*Rounding floor*), and a summary. A step above ``tol`` only at 30 iterations was cut by the
cap; one above it with 300 allowed too was stopped by Newton's floor rule (column ``ended``).

    python benchmarks/training_residuals.py [--depth 128] [--lr 1000] [--steps 200] [--width 128]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=128, help="weight layers L")
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1000.0)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--param", default="mupc", choices=["mupc", "sp", "ntp"])
    ap.add_argument("--activation", default="tanh")
    ap.add_argument("--tol", type=float, default=1e-5)
    ap.add_argument("--dataset", default="fashion_mnist")
    args = ap.parse_args(argv)
    import pclandscape as pcl
    from pclandscape.experiments.base import sgd

    ds = pcl.data.load(args.dataset)
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    param = {"mupc": pcl.MuPC(), "sp": pcl.SP(), "ntp": pcl.NTP()}[args.param]
    net = pcl.MLP(jax.random.key(0), [x.shape[1]] + [args.width] * (args.depth - 1) + [y.shape[1]], args.activation,
                  residual=True, param=param)
    train_solver, long = pcl.Newton(tol=args.tol), pcl.Newton(tol=args.tol, max_steps=300)

    def long_solve(n, xb, yb):
        eq = pcl.infer(n, xb, yb, long)
        return jnp.stack([eq.grad_norm, eq.steps.astype(eq.grad_norm.dtype)])

    metrics = {"long": long_solve}  # one solve, its residual and iterations
    t = time.perf_counter()
    _, h = pcl.train(net, (x, y), rule="pc", optimizer=sgd(1.0), steps=args.steps, batch_size=args.batch,
                     key=jax.random.key(1), grad_scale=args.lr, solver=train_solver, progress=True, steps_per_call=10,
                     metrics=metrics)
    wall = time.perf_counter() - t
    r30, (r300, i300) = h.inference_grad_norm, (h.extra["long"][:, 0], h.extra["long"][:, 1].astype(int))
    print(f"# {args.activation} residual MLP, {args.depth} layers of width {args.width}, {type(param).__name__}, "
          f"lr {args.lr:g}, {args.steps} steps of batch {args.batch} on {ds.name}, tol {args.tol:g}; {wall:.0f} s")
    print(f"# batch loss: first {h.loss[0]:.4f}, last {h.loss[-1]:.4f}")
    print(f"{'step':>5} {'residual (30 its)':>18} {'residual (300 cap)':>19} {'iterations':>11} {'ended':>8}")
    for s in np.nonzero(r30 > args.tol)[0]:
        ended = "tol" if r300[s] <= args.tol else ("floor" if i300[s] < 300 else "cap")
        print(f"{s:>5} {r30[s]:>18.4e} {r300[s]:>19.4e} {i300[s]:>11} {ended:>8}")
    above30, above300 = int((r30 > args.tol).sum()), int((r300 > args.tol).sum())
    print(f"# steps above tol: {above30} of {len(r30)} with 30 iterations, {above300} with up to 300 "
          f"(of which {int(((r300 > args.tol) & (i300 < 300)).sum())} stopped at the floor); largest residual "
          f"{np.nanmax(r30):.3e} (30) and {np.nanmax(r300):.3e} (300); iterations of the 300-cap solve: median "
          f"{np.median(i300):.0f}, largest {i300.max()}")


if __name__ == "__main__":
    main()
