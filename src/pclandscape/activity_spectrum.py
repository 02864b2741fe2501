"""The spectrum of the activity Hessian ``d^2 F_i / dz_i^2``: how hard inference is.

Gradient-flow inference converges at a rate set by the activity Hessian's smallest
eigenvalue and must keep its step below ``2 / lambda_max``; the condition number
``lambda_max / lambda_min`` is the number of Euler steps per e-fold of the residual. The
muPC paper (Innocenti et al., arXiv:2505.13124) reports that it grows with width, depth and
training time in standard parameterisations; :func:`activity_spectrum` measures it and
:func:`activity_condition_number` records it during training (``train(metrics=...)``).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from ._energies import per_sample_energies
from .activity_hessian import dense_activity_hessian
from .curvature import HessianOperator, lanczos
from .networks import PCNetwork

__all__ = ["ActivitySpectrum", "activity_spectrum", "activity_condition_number"]


class ActivitySpectrum(NamedTuple):
    """Extreme eigenvalues of each sample's activity Hessian.

    Attributes:
        lambda_min, lambda_max: ``(N,)`` smallest and largest eigenvalues.
        condition: ``(N,)`` ``lambda_max / lambda_min`` (inf where ``lambda_min <= 0``: the
            energy is not convex in the activities there).
        method: ``"dense"`` (``eigvalsh`` of the assembled Hessians) or ``"lanczos"``.
    """

    lambda_min: Array
    lambda_max: Array
    condition: Array
    method: str


def _activities(net, x, activities):
    return tuple(net.feedforward(x)[:-1]) if activities is None else tuple(activities)


def _sample_hvp(args, v):
    """``d^2 F_i / dz_i^2 v`` for one sample (``args = (net, x_i, y_i, z_i)``, batch axis of 1
    on ``x_i``, ``y_i``, none on ``z_i``; ``v`` flat), by forward-over-reverse autodiff."""
    net, xi, yi, zi = args
    flat, unravel = ravel_pytree(zi)

    def energy(f):
        return per_sample_energies(net, tuple(a[None] for a in unravel(f)), xi, yi)[0]

    return jax.jvp(jax.grad(energy), (flat,), (v,))[1]


def activity_spectrum(
    net: PCNetwork,
    x: Float[Array, "N ..."],
    y: Float[Array, "N dy"],
    activities=None,
    *,
    dense_max: int = 2048,
    max_iter: int | None = None,
) -> ActivitySpectrum:
    """Extreme eigenvalues and condition number of ``d^2 F_i / dz_i^2`` for every sample.

    At ``activities`` (default: the feedforward pass, where inference starts; pass
    ``pcl.infer(...).activities`` for the equilibrium). For a linear network the Hessian does
    not depend on the activities. Dense (closed-form blocks for plain MLPs, autodiff
    otherwise) when the number of activities per sample ``m <= dense_max``, else Lanczos on
    Hessian-vector products, one sample at a time (``max_iter`` products per end and sample,
    default :func:`pclandscape.lanczos`'s; a warning names the samples whose Lanczos runs did
    not converge, whose values are then estimates).
    """
    net.check_data(x, y)
    z = _activities(net, x, activities)
    m = sum(int(np.prod(a.shape[1:])) for a in z)
    if m == 0:
        raise ValueError("this network has no hidden layer: there are no activities to infer.")
    if m <= dense_max:
        ev = jnp.linalg.eigvalsh(dense_activity_hessian(net, z, x, y))
        lo, hi = ev[:, 0], ev[:, -1]
        method = "dense"
    else:
        los, his, unconverged = [], [], []
        for i in range(x.shape[0]):
            # One operator type for every sample (the sample's arrays are arguments, the
            # product a module-level function): the Lanczos programs compile once, not once per
            # sample and end (16 compilations of a 128-layer net took 4 minutes and exhausted
            # the process's memory maps).
            op = HessianOperator(fn=_sample_hvp, args=(net, x[i : i + 1], y[i : i + 1], tuple(a[i] for a in z)),
                                 size=m, dtype=z[0].dtype)
            ends = [lanczos(op, k=1, which=which, max_iter=max_iter) for which in ("smallest", "largest")]
            los.append(ends[0].eigenvalues[0])
            his.append(ends[1].eigenvalues[0])
            if not all(e.converged for e in ends):
                unconverged.append(i)
        if unconverged:
            warnings.warn(f"activity_spectrum: Lanczos did not converge for sample(s) {unconverged} of {x.shape[0]} "
                          f"within max_iter={max_iter or min(m, 1024)} products: their eigenvalues are estimates. "
                          "Pass a larger max_iter.", RuntimeWarning, stacklevel=2)
        lo, hi = jnp.stack(los), jnp.stack(his)
        method = "lanczos"
    cond = jnp.where(lo > 0, hi / jnp.where(lo > 0, lo, 1.0), jnp.inf)
    return ActivitySpectrum(lo, hi, cond, method)


def activity_condition_number(net: PCNetwork, x: Array, y: Array) -> Array:
    """The largest condition number of the activity Hessians of a batch at the feedforward
    pass (dense; traceable), for ``pcl.train(..., metrics={"activity_cond":
    pcl.activity_condition_number})``."""
    ev = jnp.linalg.eigvalsh(dense_activity_hessian(net, _activities(net, x, None), x, y))
    lo, hi = ev[:, 0], ev[:, -1]
    return jnp.max(jnp.where(lo > 0, hi / jnp.where(lo > 0, lo, 1.0), jnp.inf))
