"""The float32 floor of the inference residual: what ``pcl.infer`` reports in float32 against
the residual of the same activities evaluated in float64 (``pcl.verify_equilibrium``).

tanh MLPs ``784 - W x H - 10`` (the package's default initialisation, or ``--init-std``),
Gaussian inputs and one-hot targets, batch 64, ``pcl.Newton(tol)`` in float32 from the
feedforward pass. Per net and tolerance: Newton's iterations, the residual it reports
(``max_i ||dF_i/dz_i||``, float32), the float64 residual of the point it returned, their ratio,
and whether each is below ``tol``. Where the float64 residual stays above ``tol`` while the
float32 one is below it, ``tol`` is below what float32 activities can reach on that net.

    python benchmarks/residual_floor.py [--widths 64,500] [--depths 2,4] [--tols 1e-5,1e-4] [--batch 64]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="64,500")
    ap.add_argument("--depths", default="2,4")
    ap.add_argument("--tols", default="1e-5,1e-4")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--init-std", type=float, default=None)
    args = ap.parse_args(argv)
    import pclandscape as pcl

    x = jax.random.normal(jax.random.key(1), (args.batch, 784))
    y = jax.nn.one_hot(jnp.arange(args.batch) % 10, 10)
    init = {} if args.init_std is None else {"init_std": args.init_std}
    print(f"device: {jax.devices()[0].device_kind}, tanh MLPs, batch {args.batch}, float32 inference "
          f"(init {'default' if args.init_std is None else f'std {args.init_std:g}'})")
    print("| width | H | tol | Newton iterations | reported (float32) | float64 at the same point | float64 / float32 | "
          "float32 <= tol | float64 <= tol |")
    print("|---|---|---|---|---|---|---|---|---|")
    for width in (int(w) for w in args.widths.split(",")):
        for depth in (int(d) for d in args.depths.split(",")):
            net = pcl.MLP(jax.random.key(depth), [784] + [width] * depth + [10], "tanh", **init)
            for tol in (float(t) for t in args.tols.split(",")):
                eq = pcl.infer(net, x, y, pcl.Newton(tol=tol))
                check = pcl.verify_equilibrium(net, x, y, eq)
                print(f"| {width} | {depth} | {tol:g} | {int(eq.steps)} | {check.reported:.3e} | {check.residual:.3e} | "
                      f"{check.residual / check.reported:.2f} | {'yes' if check.reported <= tol else 'no'} | "
                      f"{'yes' if check.verified else 'no'} |", flush=True)


if __name__ == "__main__":
    main()
