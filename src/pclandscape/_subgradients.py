"""One-sided derivatives of the energy at ReLU-type kinks and the piece a descent step lives
in: shared by :mod:`pclandscape.kinks` (the residual) and the Newton solver (the active set)."""

from __future__ import annotations

import jax.numpy as jnp

from .activity_hessian import mlp_errors

__all__ = ["one_sided_derivatives", "descent_pieces"]


def one_sided_derivatives(net, z, x, y, slopes):
    """One-sided derivatives ``D^- = e - f'(0^-) c`` and ``D^+ = e - f'(0^+) c`` per hidden layer,
    and the per-sample energies."""
    left, right = slopes
    errors, backs, energies = mlp_errors(net, z, x, y)
    dminus = tuple(e - left * c for e, c in zip(errors, backs))
    dplus = tuple(e - right * c for e, c in zip(errors, backs))
    return dminus, dplus, energies


def descent_pieces(z, dminus, dplus):
    """Per hidden layer, the piece a descent step lives in and the gradient on it.

    Returns ``(side, held, grad)``: ``side`` is True for the piece right of the kink (the
    sign of ``z`` off the kink; on it, the side whose one-sided derivative descends, the
    steeper one if both do); ``held`` marks activities on a V-shaped kink
    (``D^- <= 0 <= D^+``: a minimum along that activity, to be kept at 0); ``grad`` is the
    derivative on the chosen piece, 0 where held. Its norm bounds the min-norm subgradient
    from above and is zero only where no activity can descend (not at a Lambda-shaped kink).
    """
    side, held, grad = [], [], []
    for a, m, p in zip(z, dminus, dplus):
        on = a == 0
        held_l = on & (m <= 0) & (p >= 0)
        side_l = jnp.where(on, (p < 0) & ((m <= 0) | (-p >= m)), a > 0)
        side.append(side_l)
        held.append(held_l)
        grad.append(jnp.where(held_l, 0.0, jnp.where(side_l, p, m)))
    return side, held, grad
