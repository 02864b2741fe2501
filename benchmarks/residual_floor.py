"""The float32 floor of the inference residual: what ``pcl.infer`` reports in float32 against
the residual of the same activities evaluated in float64 (``pcl.verify_equilibrium``).

tanh MLPs ``784 - W x H - 10`` (the package's default initialisation, or ``--init-std``),
Gaussian inputs and one-hot targets, batch 64, ``pcl.Newton(tol)`` in float32 from the
feedforward pass. Per net and tolerance: Newton's iterations, the residual it reports
(``max_i ||dF_i/dz_i||``, float32), the float64 residual of the point it returned, their ratio,
and whether each is below ``tol``. Where the float64 residual stays above ``tol`` while the
float32 one is below it, ``tol`` is below what float32 activities can reach on that net.

The last columns measure that floor directly: the net's float64 equilibrium (``pcl.Newton``
to 1e-12 in float64, from Newton's float32 point) rounded to float32, and the float32
residual there (largest over the batch): the residual of the best point float32 activities
can represent, as float32 evaluates it. Where it is above ``tol``, no float32 solver can meet
``tol`` (``pcl.Newton`` then stops at the floor, see its *Rounding floor*).

``--residual`` (with ``--param sp|mupc|ntp``) measures residual MLPs (identity skips between
hidden layers, ``benchmarks/depth.py``'s nets, ``L = H + 1`` weight layers) instead.

    python benchmarks/residual_floor.py [--widths 64,500] [--depths 2,4] [--tols 1e-5,1e-4] [--batch 64]
    python benchmarks/residual_floor.py --residual --param sp --widths 128 --depths 7,15,31 --tols 1e-5 --max-steps 300
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="64,500")
    ap.add_argument("--depths", default="2,4")
    ap.add_argument("--tols", default="1e-5,1e-4")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--init-std", type=float, default=None)
    ap.add_argument("--residual", action="store_true", help="residual MLPs (skips between hidden layers)")
    ap.add_argument("--param", default="sp", choices=["sp", "mupc", "ntp"], help="parameterisation (with --residual)")
    ap.add_argument("--max-steps", type=int, default=30, help="Newton's iteration cap")
    args = ap.parse_args(argv)
    import pclandscape as pcl
    from pclandscape._energies import per_sample_norm
    from pclandscape.inference._verify import _as_float64

    x = jax.random.normal(jax.random.key(1), (args.batch, 784))
    y = jax.nn.one_hot(jnp.arange(args.batch) % 10, 10)
    init = {} if args.init_std is None else {"init_std": args.init_std}
    if args.residual:
        init.update(residual=True, param={"sp": pcl.SP(), "mupc": pcl.MuPC(), "ntp": pcl.NTP()}[args.param])
    kind = f"residual {args.param.upper()} tanh MLPs" if args.residual else "tanh MLPs"
    print(f"device: {jax.devices()[0].device_kind}, {kind}, batch {args.batch}, float32 inference "
          f"(init {'default' if args.init_std is None else f'std {args.init_std:g}'}, Newton max_steps {args.max_steps})")
    print("| width | H | tol | Newton iterations | reported (float32) | float64 at the same point | float64 / float32 | "
          "float32 <= tol | float64 <= tol | floor: float32 residual of the rounded float64 equilibrium | floor <= tol |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for width in (int(w) for w in args.widths.split(",")):
        for depth in (int(d) for d in args.depths.split(",")):
            net = pcl.MLP(jax.random.key(depth), [784] + [width] * depth + [10], "tanh", **init)
            for tol in (float(t) for t in args.tols.split(",")):
                eq = pcl.infer(net, x, y, pcl.Newton(tol=tol, max_steps=args.max_steps))
                check = pcl.verify_equilibrium(net, x, y, eq)
                with jax.enable_x64(True):
                    net64, x64, y64 = _as_float64((net, x, y))
                    star = pcl.infer(net64, x64, y64, pcl.Newton(tol=1e-12, max_steps=300), init=_as_float64(eq.activities))
                    rounded = tuple(np.asarray(a, np.float32) for a in star.activities)
                floor = float(jnp.max(per_sample_norm(pcl.stationarity_residual(net, rounded, x, y))))
                star_note = "" if bool(star.converged) else f" (float64 solve at {float(star.grad_norm):.1e})"
                print(f"| {width} | {depth} | {tol:g} | {int(eq.steps)} | {check.reported:.3e} | {check.residual:.3e} | "
                      f"{check.residual / check.reported:.2f} | {'yes' if check.reported <= tol else 'no'} | "
                      f"{'yes' if check.verified else 'no'} | {floor:.3e}{star_note} | {'yes' if floor <= tol else 'no'} |",
                      flush=True)


if __name__ == "__main__":
    main()
