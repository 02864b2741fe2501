"""Kinks of piecewise-linear activations: stationarity of the energy where it is not smooth.

With ``f = ReLU`` the energy of an MLP is piecewise quadratic in the activities: on each
region where the sign pattern of the hidden activities is fixed, ``f(z_l) = S_l z_l``
(``S_l`` a diagonal 0/1 matrix) and ``F_i`` is a convex quadratic. Its minima often sit on
a *kink*, an activity ``z_{l,j} = 0`` with the energy V-shaped along it: there
``dF_i/dz_{l,j}`` jumps from ``e_{l,j}`` (left, ``f' = 0``) to ``e_{l,j} - c_{l,j}`` (right,
``f' = 1``), where ``e_l = z_l - mu_l`` and ``c_l = W_{l+1}^T e_{l+1}``, and no point has a
zero gradient. Gradient flow then chatters across the kink and its residual
``||dF_i/dz_i||`` stalls (at ~0.1-0.2 on the width-300 ReLU nets of ``benchmarks/inference.py``).

The residual that measures the distance to such an equilibrium is the norm of the
*min-norm element of the Clarke subdifferential* (:func:`stationarity_residual`): the
gradient wherever ``F_i`` is differentiable, and, for an activity exactly at a kink, the
point of the interval between the two one-sided derivatives ``[D^-, D^+]`` closest to 0.
It is zero exactly at the Clarke-stationary points; a V-shaped kink with
``D^- <= 0 <= D^+`` is a minimum along that activity. :class:`pclandscape.Newton` finds
these equilibria for ReLU MLPs exactly, by Newton steps within one quadratic piece that
stop on the kinks they reach (an active-set method).

Kinks are known for MLPs whose activation is given by name (:data:`KINKS`); the CNN (ReLU
and max-pooling) is treated as smooth, its residual the plain gradient.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from ._energies import activity_grad
from ._subgradients import one_sided_derivatives
from .networks import ACTIVATIONS, PCNetwork, has_block_closed_form
from .objectives import check_activities

__all__ = ["KINKS", "kink_slopes", "stationarity_residual", "activities_on_kinks"]


KINKS: dict[str, tuple[float, float]] = {"relu": (0.0, 1.0)}
"""Activations (by name) with one kink at 0: ``(slope left of 0, slope right of 0)``."""


def kink_slopes(net: PCNetwork) -> tuple[float, float] | None:
    """``(f'(0^-), f'(0^+))`` when ``net`` is an MLP whose activation has a kink at 0, else None."""
    if not has_block_closed_form(net):
        return None
    name = net.activation_name
    if name in KINKS and net.activation is ACTIVATIONS[name]:
        return KINKS[name]
    return None


def _min_norm(z, dminus, dplus):
    """Min-norm Clarke subgradient per layer: the gradient off the kink (``D^+`` right of it,
    ``D^-`` left of it), the point of ``[min(D^-, D^+), max(D^-, D^+)]`` closest to 0 on it."""
    out = []
    for a, dm, dp in zip(z, dminus, dplus):
        on = jnp.clip(0.0, jnp.minimum(dm, dp), jnp.maximum(dm, dp))
        out.append(jnp.where(a == 0, on, jnp.where(a > 0, dp, dm)))
    return tuple(out)


def stationarity_residual(
    net: PCNetwork, activities, x: Float[Array, "N ..."], y: Float[Array, "N dy"]
) -> tuple[Array, ...]:
    """Min-norm element of the Clarke subdifferential of each ``F_i`` in its activities.

    Equal to :func:`pclandscape.activity_grad` (the per-sample gradient ``dF_i/dz_i``)
    wherever the energy is differentiable, which is everywhere for smooth activations.
    For an MLP with a kinked activation (:data:`KINKS`), an activity exactly at the kink
    contributes the point of ``[min(D^-, D^+), max(D^-, D^+)]`` nearest 0, where
    ``D^-`` and ``D^+`` are the one-sided derivatives ``e_l - f'(0^\\mp) W_{l+1}^T e_{l+1}``:
    zero where the energy is V-shaped (a minimum along that activity) or Lambda-shaped.

    Args:
        net: the network.
        activities: hidden activities ``(z_1, ..., z_{L-1})``, each ``(N, n_l)``.
        x: inputs ``(N, d_x)``.
        y: targets ``(N, d_y)`` (NaN entries unobserved).

    Returns:
        A tuple shaped like ``activities``; its per-sample norm is the residual that
        :func:`pclandscape.infer` reports as ``grad_norm``.
    """
    activities = check_activities(net, activities, x)
    slopes = kink_slopes(net)
    if slopes is None or not activities:
        return activity_grad(net, activities, x, y)
    dminus, dplus, _ = one_sided_derivatives(net, activities, x, y, slopes)
    return _min_norm(activities, dminus, dplus)


def activities_on_kinks(net: PCNetwork, activities) -> Array:
    """Number of activities exactly at a kink (``z_{l,j} = 0`` for ReLU), over the batch.

    Zero for networks without kinks. Where it is positive the energy is not twice
    differentiable at these activities, so Hessian formulas that differentiate through the
    equilibrium (the implicit function theorem) do not apply.
    """
    if kink_slopes(net) is None or not len(activities):
        return jnp.zeros((), jnp.int32)
    return sum(jnp.sum(a == 0).astype(jnp.int32) for a in activities)
