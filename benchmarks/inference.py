"""Wall time and iterations until a *verified* equilibrium, per solver, per net, per depth.

For MLPs ``784 - W x H - 10`` (activation linear / tanh / ReLU, H in --depths, standard fan-in
init, batch --batch of Gaussian inputs and one-hot targets) every solver runs from the
feedforward pass until ``max_i ||dF_i/dz_i|| <= tol`` (1e-5 in float32, 1e-10 with --x64):

- ``Euler(dt=0.1, stop_at_tol=True)``: gradient flow, stopped on the residual;
- ``Heun(tol)``: diffrax Heun + PID, per-sample steps, stopped on the residual;
- ``Newton(block)``: damped Newton with the exact block-tridiagonal activity Hessian;
- ``Newton(cg)``: truncated Newton, per-sample CG on Hessian-vector products;
- ``ExactLinear``: the direct solve (linear nets), by its default route (``method="auto"``:
  output space when ``d_y`` = 10 is below the width), and ``ExactLinear activity``: the
  block-tridiagonal solve (``method="activity"``).

For ReLU nets the residual is the min-norm subgradient (:mod:`pclandscape.kinks`): their
equilibria sit on kinks, where the gradient jumps and gradient flow (Euler, Heun) only
chatters; Newton solves them by its active-set iteration.

Each row: median wall time over --repeats solves after compilation, iterations (Euler steps,
Heun steps, Newton iterations), the residual reached, and the time ratio to Newton's best
variant. A solver that hits its iteration cap reports the residual it reached (``no``).
Timed round-robin in one process so machine load affects all solvers alike; the solvers that
call LAPACK (Newton block, ExactLinear) are timed on their own after the others, since
LAPACK's worker threads slow down whatever runs right after them on a small machine.

    python benchmarks/inference.py [--width 300] [--depths 2,5,10] [--batch 64] [--x64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).parent))
from _timing import device_name  # noqa: E402


_SHORT = {"euler": "Euler dt=0.1", "heun": "Heun+PID", "block": "Newton block", "cg": "Newton cg", "pcg": "Newton pcg", "exact": "ExactLinear",
          "exact_activity": "ExactLinear activity", "epc": "EPC dt=0.1"}


_LAPACK = {"Newton block", "ExactLinear", "ExactLinear activity"}


def _interleaved(fns, repeats, skip=frozenset()):
    """Median ms per callable (timed round-robin), leaving out the names in ``skip``."""
    times = {k: [] for k in fns if k not in skip}
    for _ in range(repeats):
        for k in times:
            t = time.perf_counter()
            jax.block_until_ready(fns[k]())
            times[k].append(1e3 * (time.perf_counter() - t))
    return {k: statistics.median(v) for k, v in times.items()}


def measure(fns, repeats):
    """``(results, median ms)`` per solve callable: compiled and run once, then timed
    round-robin, the LAPACK solvers alone after the others (LAPACK's worker threads keep
    spinning after a solve and slow whatever runs next)."""
    results = {k: jax.block_until_ready(f()) for k, f in fns.items()}  # compile + first solve
    med = _interleaved(fns, repeats, skip=_LAPACK)
    for k in _LAPACK & fns.keys():
        med.update(_interleaved({k: fns[k]}, repeats))
    return results, med


def print_rows(label, results, med, reference, width):
    """One line per solver: ms, iterations, residual, converged, time over ``reference``."""
    for k, eq in results.items():
        print(f"{label:<{width}} {k:<20} {med[k]:>10.1f} {int(eq.steps):>7d} {float(eq.grad_norm):>10.1e} "
              f"{'yes' if bool(eq.converged) else 'no':>5} {med[k] / reference:>10.2f}", flush=True)


def _solvers(pcl, act, tol, max_steps):
    out = {
        "Euler dt=0.1": pcl.Euler(dt=0.1, steps=max_steps, tol=tol, stop_at_tol=True),
        "Heun+PID": pcl.Heun(t1=1e5, rtol=tol / 10, atol=tol / 10, tol=tol, max_steps=max_steps),
        "Newton block": pcl.Newton(tol=tol, max_steps=50, linear_solve=pcl.BlockTridiagonal()),
        "Newton cg": pcl.Newton(tol=tol, max_steps=50, linear_solve=pcl.CG(max_steps=200, precondition=False)),
        "Newton pcg": pcl.Newton(tol=tol, max_steps=50, linear_solve=pcl.CG(max_steps=200, precondition=True)),
    }
    if act == "linear":
        out["ExactLinear"] = pcl.ExactLinear(tol=tol)
        out["ExactLinear activity"] = pcl.ExactLinear(tol=tol, method="activity")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=300)
    p.add_argument("--depths", default="2,5,10")
    p.add_argument("--activations", default="linear,tanh,relu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-steps", type=int, default=5000, help="iteration cap of Euler and Heun")
    p.add_argument("--solvers", default="all", help="comma-separated subset of: euler,heun,block,cg,pcg,exact,exact_activity")
    p.add_argument("--precision", default="highest", choices=["highest", "default"],
                   help="float32 matrix products: true float32 (default) or the backend's default (TF32 on recent GPUs, "
                        "whose rounding floors the residual far above 1e-5)")
    p.add_argument("--x64", action="store_true", help="float64, tol 1e-10 (default float32, tol 1e-5)")
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", args.x64)
    if args.precision == "highest":
        jax.config.update("jax_default_matmul_precision", "highest")
    import pclandscape as pcl

    dtype = jnp.float64 if args.x64 else jnp.float32
    tol = 1e-10 if args.x64 else 1e-5
    x = jax.random.normal(jax.random.key(1), (args.batch, 784), dtype)
    y = jax.nn.one_hot(jax.random.randint(jax.random.key(2), (args.batch,), 0, 10), 10, dtype=dtype)
    print(f"# time to max_i ||dF_i/dz_i|| <= {tol:g} ({'float64' if args.x64 else 'float32'}), batch {args.batch}, "
          f"width {args.width}, device {device_name()}, matmul precision {args.precision}, median of {args.repeats}")
    print(f"{'net':<18} {'solver':<20} {'ms':>10} {'iters':>7} {'residual':>10} {'conv':>5} {'t/t_Newton':>10}")
    for act in args.activations.split(","):
        for h in (int(d) for d in args.depths.split(",")):
            net = pcl.MLP(jax.random.key(0), [784] + [args.width] * h + [10], act)
            net = jax.tree_util.tree_map(lambda a: a.astype(dtype) if isinstance(a, jax.Array) else a, net)
            solvers = _solvers(pcl, act, tol, args.max_steps)
            if args.solvers != "all":
                keep = {_SHORT[k] for k in args.solvers.split(",")}
                solvers = {k: v for k, v in solvers.items() if k in keep}
            fns = {k: (lambda s=s: pcl.infer(net, x, y, s)) for k, s in solvers.items()}
            results, med = measure(fns, args.repeats)
            newton = min([med[k] for k in ("Newton block", "Newton cg", "Newton pcg") if k in med] or [float("nan")])
            print_rows(f"{act} H={h}", results, med, newton, 18)


if __name__ == "__main__":
    main()
