"""Seconds for curvature computations on the paper's MNIST nets (2-core CPU targets in the issue).

Each figure is wall time *including compilation* (a fresh process, first call), float64,
MNIST-shaped random data (batch 64, inputs N(0.13, 0.31^2)-like, one-hot targets):

1. dense Hessians of L and F* (implicit) for the §A.4 MNIST nets 784-10-10 (H=1), 784-10-10-10
   (H=2), 784-5-5-5-10 (H=3), and one Hessian-vector product of each;
2. Lanczos lambda_min of H_F* at the origin of a 784-300-300-10 linear net (p ~ 3.3e5),
   against -lambda_max(Sigma_yy) (Theorem 2 / Eq 8), for the closed-form and implicit operators;
3. exactness: the implicit dense H_F* of 784-10-10-10 vs autodiff through 50 Euler steps;
4. Lanczos lambda_min of the implicit H_F* of a tanh 784-300-300-10 net near the origin;
5. ``--lanczos-memory``: Lanczos memory against time on the closed-form H_F* operator of the
   linear 784-300-300-10 net (p = 328,200): the 5 smallest at the origin and the smallest at
   a random point, the Krylov basis bounded by 1024 vectors (as before restarts existed: up
   to 2.5 GiB), by the default 256 MiB (102 vectors) and by 32 vectors, round-robin, median
   of ``--repeats`` (compilation excluded);
0. first, the issue's 2 s target row, dense implicit H_F* of 784-10-10-10, as the median over
   ``--fresh`` new processes (each first computes one other net's Hessian, as in the table,
   so JAX's one-time start-up is not charged to it): this machine's timings vary by +-20 %.

    python benchmarks/curvature.py [--skip-tanh] [--fresh 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import pclandscape as pcl  # noqa: E402
from _timing import device_name  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t


def mnist_like(n=64, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    x = (jax.random.uniform(k1, (n, 784)) > 0.8) * 2.8 - 0.42  # ~ normalised MNIST pixels
    y = jax.nn.one_hot(jax.random.randint(k2, (n,), 0, 10), 10)
    return x.astype(jnp.float64), y.astype(jnp.float64)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-tanh", action="store_true")
    p.add_argument("--fresh", type=int, default=5, help="fresh processes for the target row (0: skip)")
    p.add_argument("--target-row", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--lanczos-memory", action="store_true", help="only the Lanczos memory-vs-time table")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    if args.target_row:
        return target_row()
    if args.lanczos_memory:
        return lanczos_memory(args.repeats)
    # the fresh processes run first, while this one is idle (XLA:CPU's worker threads keep
    # spinning for a while after heavy work and would slow a child process down)
    runs = [float(subprocess.run([sys.executable, __file__, "--target-row"], check=True, capture_output=True,
                                 text=True).stdout.split()[-1]) for _ in range(args.fresh)]
    x, y = mnist_like()
    print(f"device: {device_name()}  float64  batch 64  (times include compilation)")
    print(f"{'what':<58} {'p':>8} {'seconds':>8}  note")
    if runs:
        print(f"{'dense H_F* implicit 784-10-10-10, median of ' + str(args.fresh) + ' fresh processes':<58} {8040:>8} "
              f"{statistics.median(runs):>8.2f}  runs: {', '.join(f'{r:.2f}' for r in runs)}")

    for widths in ([784, 10, 10], [784, 10, 10, 10], [784, 5, 5, 5, 10]):
        net = pcl.MLP(jax.random.key(1), widths, "linear", init_std=5e-3**0.5)
        p_ = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
        h_l, t_l = timed(lambda: pcl.loss_hessian(net, x, y))
        h_f, t_f = timed(lambda: pcl.energy_hessian(net, x, y, pcl.Implicit(solver=pcl.ExactLinear())))
        v = jax.random.normal(jax.random.key(2), (p_,))
        hv, t_hv = timed(lambda: pcl.hvp(lambda w: pcl.mse_loss(net.with_weights(w), x, y), pcl.weights(net), v))
        op = pcl.energy_hessian_operator(net, x, y, pcl.Implicit(solver=pcl.ExactLinear()))
        hvf, t_hvf = timed(lambda: op.mv(v))
        tag = "-".join(map(str, widths))
        print(f"{'dense H_L  ' + tag:<58} {p_:>8} {t_l:>8.2f}")
        print(f"{'dense H_F* implicit  ' + tag:<58} {p_:>8} {t_f:>8.2f}  |H v - (H_F* dense) v| = {float(jnp.max(jnp.abs(hvf - h_f @ v))):.1e}")
        print(f"{'one HVP of L  ' + tag:<58} {p_:>8} {t_hv:>8.2f}  |HVP - dense| = {float(jnp.max(jnp.abs(hv - h_l @ v))):.1e}")
        print(f"{'one HVP of implicit F*  ' + tag:<58} {p_:>8} {t_hvf:>8.2f}")

    # exactness of implicit vs unrolled on the 784-10-10-10 net at a random (non-zero) point
    net = pcl.MLP(jax.random.key(3), [784, 10, 10, 10], "linear")
    h_t, _ = timed(lambda: pcl.energy_hessian(net, x, y, pcl.Theory()))
    h_i, t_i = timed(lambda: pcl.energy_hessian(net, x, y, pcl.Implicit(solver=pcl.ExactLinear())))
    h_u, t_u = timed(lambda: pcl.energy_hessian(net, x, y, pcl.Unrolled(solver=pcl.Euler(dt=0.1, steps=50))))
    f_star = float(pcl.theory.equilibrated_energy(pcl.weights(net), x, y))
    f_50 = float(pcl.infer(net, x, y, pcl.Euler(dt=0.1, steps=50)).energy)
    rel = lambda a: float(jnp.max(jnp.abs(a - h_t)) / jnp.max(jnp.abs(h_t)))
    print(f"{'dense H_F* implicit 784-10-10-10 (random theta)':<58} {7940 + 100:>8} {t_i:>8.2f}  max rel err vs theory {rel(h_i):.1e}")
    print(f"{'dense H_F* unrolled T=50 784-10-10-10 (random theta)':<58} {8040:>8} {t_u:>8.2f}  max rel err vs theory {rel(h_u):.1e}; F* after 50 Euler steps off by {abs(f_50 - f_star) / f_star:.1e} rel")

    # Lanczos at the origin of the wide linear net
    widths = [784, 300, 300, 10]
    zero = pcl.MLP(None, widths, "linear", init="zeros", dtype=jnp.float64)
    p_ = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    target = -float(np.linalg.eigvalsh(np.asarray(y.T @ y / y.shape[0]))[-1])
    for method in ("theory", "implicit"):
        def run():
            m = pcl.Implicit(solver=pcl.ExactLinear()) if method == "implicit" else pcl.Theory()
            op = pcl.energy_hessian_operator(zero, x, y, m)
            return pcl.lanczos(op, k=1, which="smallest").eigenvalues[0]
        lam, t = timed(run)
        print(f"{'Lanczos lambda_min H_F* (' + method + ') at 0, 784-300-300-10':<58} {p_:>8} {t:>8.2f}  rel err vs -lambda_max(Syy) {abs(float(lam) - target) / abs(target):.1e}")

    if not args.skip_tanh:
        net = pcl.MLP(jax.random.key(4), widths, "tanh", init_std=5e-3)  # std 5e-3: near 0 (see fig5)

        def run():
            op = pcl.energy_hessian_operator(net, x, y, pcl.Implicit(solver=pcl.Euler(dt=0.25, steps=800, tol=1e-9)))
            return pcl.lanczos(op, k=1, which="smallest")
        res, t = timed(run)
        print(f"{'Lanczos lambda_min implicit H_F* tanh 784-300-300-10 near 0':<58} {p_:>8} {t:>8.2f}  lambda_min = {float(res.eigenvalues[0]):.6g} (-lambda_max(Syy) = {target:.6g}), {res.iterations} iterations")



def lanczos_memory(repeats: int):
    """Seconds and products of Lanczos per Krylov basis bound on the closed-form H_F* operator
    of the linear 784-300-300-10 net: the k = 5 smallest at the origin (few distinct
    eigenvalues: the Krylov space closes early) and the smallest at a random point (init std
    0.05: a spread spectrum, so a small basis must restart). Timed round-robin (median),
    compilation excluded."""
    x, y = mnist_like()
    widths = [784, 300, 300, 10]
    cases = {
        "origin, k=5": (pcl.MLP(None, widths, "linear", init="zeros", dtype=jnp.float64), 5),
        "random point, k=1": (pcl.MLP(jax.random.key(4), widths, "linear", init_std=0.05), 1),
    }
    ops = {c: pcl.energy_hessian_operator(net, x, y, pcl.Theory()) for c, (net, _) in cases.items()}
    p_ = next(iter(ops.values())).size
    bounds = {"1024 (as before)": 1024, "default (256 MiB)": None, "32": 32}
    keys = [(c, b) for c in cases for b in bounds]
    run = lambda c, b: pcl.lanczos(ops[c], k=cases[c][1], max_basis=bounds[b], max_iter=4096)
    for c, b in keys:  # compile every shape outside the timing
        jax.block_until_ready(run(c, b).eigenvalues)
    times, out = {key: [] for key in keys}, {}
    for _ in range(repeats):
        for c, b in keys:
            out[(c, b)], t = timed(lambda: run(c, b))
            times[(c, b)].append(t)
    print(f"device: {device_name()}  float64  p = {p_}  Lanczos on H_F* (theory operator) of linear 784-300-300-10; "
          f"median of {repeats}")
    print(f"{'case':<18} {'max_basis':<18} {'basis MiB <=':>12} {'median s':>9} {'products':>9} {'converged':>9}  eigenvalues")
    for (c, b), ts in times.items():
        mb = min(bounds[b] or max(64, (1 << 28) // (p_ * 8)), 4096)
        r = out[(c, b)]
        print(f"{c:<18} {b:<18} {mb * p_ * 8 / 2**20:>12.0f} {statistics.median(ts):>9.2f} {r.iterations:>9} "
              f"{str(r.converged):>9}  {', '.join(f'{v:.8g}' for v in np.asarray(r.eigenvalues))}")


def target_row():
    """Seconds for the dense implicit H_F* of 784-10-10-10 (after a 784-10-10 one), printed last."""
    x, y = mnist_like()
    for widths in ([784, 10, 10], [784, 10, 10, 10]):
        net = pcl.MLP(jax.random.key(1), widths, "linear", init_std=5e-3**0.5)
        _, t = timed(lambda: pcl.energy_hessian(net, x, y, pcl.Implicit(solver=pcl.ExactLinear())))
    print(f"{t:.4f}")


if __name__ == "__main__":
    main()
