"""Error-based inference (ePC): gradient descent on the prediction errors instead of the activities."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .._checks import positive_int, positive_number
from .._energies import activities_from_errors, activity_grad, hidden_errors, per_sample_norm
from ._base import AbstractSolver

__all__ = ["EPC"]


class EPC(AbstractSolver):
    """Inference by gradient descent on the prediction errors (error-based PC, "ePC":
    Goemaere et al., arXiv 2505.20137).

    The hidden activities are reparameterised by their errors, ``z_l = mu_l(z_{l-1}) + e_l``
    (``z_0 = x``), a bijection whose Jacobian ``dz/de`` is block lower-triangular with
    identity blocks on its diagonal. The energy is the same function, ``F_i(e) = F_i(z(e))``
    (Eq 2: ``1/2 sum_l ||e_l||^2`` plus the output term, whose error reaches every ``e_l``
    through the forward pass at once), so the two have the same equilibria
    (``dF/de = (dz/de)^T dF/dz`` vanishes exactly where ``dF/dz`` does). Each step is

        e <- e - dt * dF_i/de_i,    dF_i/de_i = (dz_i/de_i)^T dF_i/dz_i,

    per sample (one forward pass through ``z(e)``, the activity gradient, one
    vector-Jacobian product back). Starting from the feedforward pass (``e = 0``), the output
    error is propagated to every layer in the first step, where gradient flow on the
    activities moves it down one layer per step: on deep chains this needs far fewer steps
    than :class:`Euler`.

    Shapes: the errors have the activities' shapes, ``e_l`` of ``(N, n_l)`` for an MLP
    (``N`` samples, ``n_l`` units of hidden layer ``l``; the CNN's ``(N, C, H, W)`` blocks
    likewise); ``solve`` returns the activities ``z(e)`` and the number of steps taken.

    The loop stops as soon as every sample's residual ``||dF_i/dz_i||`` (the activity
    gradient, the quantity :func:`pclandscape.infer` reports) is ``<= tol``, or after
    ``steps`` steps.

    Args:
        dt: step size on the errors (per sample).
        steps: maximum number of steps.
        tol: stopping residual ``max_i ||dF_i/dz_i||``.
    """

    dt: float = 0.1
    steps: int = eqx.field(default=10_000, static=True)
    tol: float = 1e-5
    descent_variable: ClassVar[str] = "e"  # what dt steps on (divergence messages name d^2F/de^2)

    def __check_init__(self):
        positive_number("EPC", "dt", self.dt)
        positive_int("EPC", "steps", self.steps)
        positive_number("EPC", "tol", self.tol)

    def solve(self, net, x, y, z0):
        z0 = tuple(z0)
        if not z0:
            return z0, jnp.asarray(0, jnp.int32)
        dt = self.dt

        def grads(e):
            z, back = jax.vjp(lambda ee: activities_from_errors(net, x, ee), e)
            gz = activity_grad(net, z, x, y)
            return back(gz)[0], per_sample_norm(gz)

        def cond(carry):
            k, _, _, gnorm = carry
            return (k < self.steps) & (jnp.max(gnorm) > self.tol)

        def body(carry):
            k, e, ge, _ = carry
            e = tuple(a - dt * b for a, b in zip(e, ge))
            return (k + 1, e, *grads(e))

        e0 = hidden_errors(net, x, z0)
        k, e, _, _ = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), e0, *grads(e0)))
        return activities_from_errors(net, x, e), k
