"""Inference at depth: time and iterations to a verified equilibrium vs depth, per solver, on
residual MLPs (identity skips between hidden layers, muPC scalings by default).

Nets ``784 - W x (L-1) - 10`` with ``L`` in --depths weight layers (8 ... 128), activation
tanh / ReLU, ``pcl.MuPC()`` (or ``--param sp``), batch --batch of Gaussian inputs and one-hot
targets. Every solver runs from the feedforward pass until ``max_i ||dF_i/dz_i|| <= tol``
(1e-5 float32, 1e-10 with --x64; ReLU: the min-norm subgradient), as in
``benchmarks/inference.py`` (same timing: median of --repeats after compilation, round-robin,
LAPACK solvers alone). Iteration caps: Euler, Heun and EPC (gradient descent on the errors,
``pcl.EPC``) --max-steps, Newton 300.

    python benchmarks/depth.py [--width 128] [--depths 8,16,32,64,128] [--batch 64] [--solvers euler,heun,cg,block,epc]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).parent))
from _timing import device_name  # noqa: E402
from inference import _SHORT, measure, print_rows  # noqa: E402


def _solvers(pcl, tol, max_steps):
    return {
        "Euler dt=0.1": pcl.Euler(dt=0.1, steps=max_steps, tol=tol, stop_at_tol=True),
        "Heun+PID": pcl.Heun(t1=1e5, rtol=tol / 10, atol=tol / 10, tol=tol, max_steps=max_steps),
        "Newton block": pcl.Newton(tol=tol, max_steps=300, linear_solve=pcl.BlockTridiagonal()),
        "Newton cg": pcl.Newton(tol=tol, max_steps=300, linear_solve=pcl.CG(max_steps=200, precondition=False)),
        "Newton pcg": pcl.Newton(tol=tol, max_steps=300, linear_solve=pcl.CG(max_steps=200, precondition=True)),
        "EPC dt=0.1": pcl.EPC(dt=0.1, steps=max_steps, tol=tol),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depths", default="8,16,32,64,128")
    p.add_argument("--activations", default="tanh,relu")
    p.add_argument("--param", default="mupc", choices=["mupc", "sp", "ntp"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-steps", type=int, default=20000, help="iteration cap of Euler and Heun")
    p.add_argument("--solvers", default="all", help="comma-separated subset of: euler,heun,block,cg,epc")
    p.add_argument("--x64", action="store_true", help="float64, tol 1e-10 (default float32, tol 1e-5)")
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", args.x64)
    jax.config.update("jax_default_matmul_precision", "highest")
    import pclandscape as pcl

    param = {"mupc": pcl.MuPC(), "sp": pcl.SP(), "ntp": pcl.NTP()}[args.param]
    dtype = jnp.float64 if args.x64 else jnp.float32
    tol = 1e-10 if args.x64 else 1e-5
    x = jax.random.normal(jax.random.key(1), (args.batch, 784), dtype)
    y = jax.nn.one_hot(jax.random.randint(jax.random.key(2), (args.batch,), 0, 10), 10, dtype=dtype)
    print(f"# residual MLPs ({type(param).__name__}), time to max_i ||dF_i/dz_i|| <= {tol:g} "
          f"({'float64' if args.x64 else 'float32'}), batch {args.batch}, width {args.width}, device {device_name()}, "
          f"median of {args.repeats}")
    print(f"{'net':<16} {'solver':<14} {'ms':>10} {'iters':>7} {'residual':>10} {'conv':>5} {'t/t_best':>10}")
    for act in args.activations.split(","):
        for depth in (int(d) for d in args.depths.split(",")):
            net = pcl.MLP(jax.random.key(0), [784] + [args.width] * (depth - 1) + [10], act, residual=True,
                          param=param, dtype=dtype)
            solvers = _solvers(pcl, tol, args.max_steps)
            if args.solvers != "all":
                keep = {_SHORT[k] for k in args.solvers.split(",")}
                solvers = {k: v for k, v in solvers.items() if k in keep}
            fns = {k: (lambda s=s: pcl.infer(net, x, y, s)) for k, s in solvers.items()}
            results, med = measure(fns, args.repeats)
            best = min(med[k] for k in fns if bool(results[k].converged)) if any(
                bool(r.converged) for r in results.values()) else float("nan")
            print_rows(f"{act} L={depth}", results, med, best, 16)


if __name__ == "__main__":
    main()
