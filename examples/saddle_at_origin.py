"""The origin of a deep linear network: a non-strict saddle of the loss, a strict saddle of
the equilibrated energy F* (the paper's Theorem 3), checked numerically in float64.

    python examples/saddle_at_origin.py
    python examples/saddle_at_origin.py --hidden 2 --width 4
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import pclandscape as pcl


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=2, help="hidden layers H")
    p.add_argument("--width", type=int, default=3)
    args = p.parse_args(argv)
    jax.config.update("jax_enable_x64", True)

    ds = pcl.data.toy_gaussian(seed=0, n_train=256, dim=3)
    x, y = jnp.asarray(ds.x_train, jnp.float64), jnp.asarray(ds.y_train, jnp.float64)
    widths = [3] + [args.width] * args.hidden + [3]
    net = pcl.MLP(jax.random.key(0), widths, "linear", init_std=0.0, dtype=jnp.float64)
    w0 = pcl.weights(net)
    loss = lambda ws: pcl.mse_loss(net.with_weights(ws), x, y)
    energy = lambda ws: pcl.infer(net.with_weights(ws), x, y, pcl.ExactLinear()).energy

    out = {}
    for name, fn in (("loss L", loss), ("equilibrated energy F*", energy)):
        hess = None
        if name.startswith("equilibrated"):
            hess = pcl.energy_hessian_operator(net, x, y, pcl.Implicit())
        cp = pcl.classify_critical_point(fn, w0, hessian=hess)
        out[name] = cp
        print(f"{name}: {cp.kind} (order {cp.order}), lambda_min = {cp.lambda_min:.6f}, "
              f"{cp.n_negative} negative and {cp.n_zero} zero eigenvalues")
    theory = np.linalg.eigvalsh(np.asarray(pcl.theory.energy_hessian_at_origin(widths, x, y)))[0]
    print(f"lambda_min of F* at the origin from the closed form (Eq 8 / Thm 3): {theory:.6f}")
    return out


if __name__ == "__main__":
    main()
