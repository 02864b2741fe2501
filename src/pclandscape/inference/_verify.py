"""Verify an equilibrium in float64: :func:`verify_equilibrium` and its result :class:`EquilibriumCheck`."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._compat import enable_x64
from .._energies import per_sample_norm
from ..kinks import stationarity_residual
from ..networks import PCNetwork
from ..objectives import check_activities
from ._infer import Equilibrium, _is_traced

__all__ = ["EquilibriumCheck", "verify_equilibrium"]


class EquilibriumCheck(eqx.Module):
    """Result of :func:`verify_equilibrium`.

    Attributes:
        residual: ``max_i ||dF_i/dz_i||_2`` at the given weights and activities, evaluated in
            float64 (min-norm subgradient on ReLU kinks, as :func:`pclandscape.infer` reports).
        per_sample: ``(N,)`` the per-sample residuals ``||dF_i/dz_i||_2`` in float64.
        reported: the residual the inference reported in its own precision (``Equilibrium.grad_norm``),
            or ``None`` when activities were passed instead of an :class:`Equilibrium`.
        tol: the tolerance checked against.
        verified: ``residual <= tol``.
    """

    residual: float
    per_sample: np.ndarray
    reported: float | None
    tol: float
    verified: bool


def _as_float64(tree):
    """Every floating-point array of ``tree`` as float64 (exact: float32 values are float64 values)."""
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(np.asarray(a), jnp.float64) if eqx.is_inexact_array(a) else a, tree)


@eqx.filter_jit
def _residuals(net, z, x, y):
    return per_sample_norm(stationarity_residual(net, z, x, y))


def verify_equilibrium(
    net: PCNetwork,
    x: Float[Array, "N ..."],
    y: Float[Array, "N dy"],
    equilibrium: Equilibrium | tuple[Float[Array, "N n"], ...],
    tol: float | None = None,
) -> EquilibriumCheck:
    """The residual of an equilibrium found in float32, evaluated in float64 (contract).

    ``pclandscape.infer`` reports the residual ``max_i ||dF_i/dz_i||`` in the precision it ran in.
    In float32 that number carries the rounding of the errors ``e_l = z_l - mu_l(z_{l-1})``:
    differences of O(1) terms, each a sum over a layer's width. On wide nets this rounding is
    of the order of the tolerances used to call an inference converged, so a solver can stop
    at a point where the float32 residual happens to be below ``tol`` while the point's true
    residual is not: a 784-500x4-10 tanh net at batch 64 (``benchmarks/residual_floor.py``)
    reported 9.85e-6 (``pcl.Newton(tol=1e-5)``) at activities whose float64 residual is
    1.48e-5, and two float32 evaluations of the residual at one point differed by up to 40 %
    of 1e-5.

    This function evaluates the residual at the given float32 weights, data and activities
    exactly as stored (float32 values are float64 values) in float64 arithmetic, where rounding
    is ~1e-16 relative: the residual of the point itself, to check a claim such as "the
    weight update was taken at an equilibrium with residual <= 1e-5". It switches float64 on
    only inside the call (``jax.enable_x64``), so the caller's precision is unchanged. For
    inputs already in float64 it recomputes the residual in float64.

    Not traceable (it leaves ``jit``'s precision); call it on concrete arrays.

    Args:
        net: the network the activities belong to.
        x: inputs ``(N, d_x)`` (``(N, C, H, W)`` for the CNN).
        y: targets ``(N, d_y)`` (NaN marks an unobserved entry).
        equilibrium: an :class:`~pclandscape.Equilibrium` from :func:`pclandscape.infer`, or
            the hidden activities ``(z_1, ..., z_{L-1})`` themselves.
        tol: the tolerance to check; default the equilibrium's own ``tol`` (required when
            activities are passed).

    Returns:
        An :class:`EquilibriumCheck`: the float64 residual (worst sample and per sample), the
        residual the inference reported, the tolerance and ``verified = residual <= tol``.

    Raises:
        ValueError: for activities or data that do not fit the network, or a missing ``tol``.
    """
    net.check_data(x, y)
    if isinstance(equilibrium, Equilibrium):
        activities, reported = equilibrium.activities, float(equilibrium.grad_norm)
        tol = equilibrium.tol if tol is None else tol
    else:
        activities, reported = equilibrium, None
        if tol is None:
            raise ValueError("verify_equilibrium(..., activities): pass tol=... (the residual to check), or pass "
                             "the Equilibrium that pcl.infer returned, whose tol is used.")
    activities = check_activities(net, activities, x)
    if _is_traced(net, x, y, activities):
        raise ValueError("verify_equilibrium cannot run under jit/vmap/grad (it evaluates in float64 outside "
                         "them); call it on concrete arrays, e.g. on the result of pcl.infer.")
    if not activities:
        per = np.zeros(np.shape(x)[0])
    else:
        with enable_x64(True):
            per = np.asarray(_residuals(*_as_float64((net, tuple(activities), x, y))), np.float64)
    residual = float(np.max(per)) if per.size else 0.0
    return EquilibriumCheck(residual=residual, per_sample=per, reported=reported, tol=float(tol),
                            verified=bool(residual <= tol))
