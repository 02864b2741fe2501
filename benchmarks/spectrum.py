"""The activity Hessian's extreme eigenvalues at depth: ``pcl.activity_spectrum`` by bisection on
block Cholesky factorisations (``method="bisection"``, the default for MLPs above ``dense_max``)
against Lanczos on Hessian-vector products (``method="lanczos"``), side by side in one run.

Residual tanh MLPs ``784 - W x (L-1) - 10`` under muPC (as ``mupc`` measures them), Gaussian
inputs and one-hot targets, at the feedforward pass. Prints the wall time of each method per
depth (median of --repeats; Lanczos's first call, which compiles, is not counted), their ratio,
and the largest relative difference of lambda_min, lambda_max and the condition number. The
bisection values are exact to 1e-10 (float64 bisection), so the difference is Lanczos's error.

    python benchmarks/spectrum.py [--width 128] [--depths 16,32,64] [--batch 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--depths", default="16,32,64")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    import pclandscape as pcl

    x = jax.random.normal(jax.random.key(1), (args.batch, 784))
    y = jax.nn.one_hot(jnp.arange(args.batch) % 10, 10)
    print(f"device: {jax.devices()[0].device_kind}, width {args.width}, batch {args.batch}, float32 activities")
    print("| L | activities per sample | bisection (s) | lanczos (s) | lanczos / bisection | max rel. diff lambda_min | "
          "lambda_max | condition (bisection) |")
    print("|---|---|---|---|---|---|---|---|")
    for depth in (int(d) for d in args.depths.split(",")):
        net = pcl.MLP(jax.random.key(0), [784] + [args.width] * (depth - 1) + [10], "tanh", residual=True,
                      param=pcl.MuPC())
        pcl.activity_spectrum(net, x[:1], y[:1], method="lanczos")  # compile
        times = {"bisection": [], "lanczos": []}
        out = {}
        for _ in range(args.repeats):
            for method in times:  # round-robin: both see the same machine
                t = time.perf_counter()
                spec = pcl.activity_spectrum(net, x, y, method=method)
                jax.block_until_ready(spec.condition)
                times[method].append(time.perf_counter() - t)
                out[method] = spec
        b, lz = out["bisection"], out["lanczos"]
        rel = lambda a, c: float(np.max(np.abs(np.asarray(a) - np.asarray(c)) / np.abs(np.asarray(c))))  # noqa: E731
        tb, tl = statistics.median(times["bisection"]), statistics.median(times["lanczos"])
        print(f"| {depth} | {(depth - 1) * args.width} | {tb:.2f} | {tl:.2f} | {tl / tb:.1f} | "
              f"{rel(lz.lambda_min, b.lambda_min):.1e} | {rel(lz.lambda_max, b.lambda_max):.1e} | "
              f"{float(jnp.max(b.condition)):.4g} |", flush=True)


if __name__ == "__main__":
    main()
