"""Telling a diverging inference or training step from a slow one, and saying so."""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["diverging", "solver_label", "divergence_hint", "divergence_message"]

_GROWTH = 2.0
_GROWTH_ATOL = 1e-6


def diverging(start, end):
    """True where inference diverged: the energy at its end is not finite, or more than
    doubled from its start (``end > 2 start + 1e-6``). A stable descent never raises ``F``
    (gradient flow, Euler below its stability limit, Newton from the feedforward pass); an
    unstable Euler step grows the energy geometrically, so a doubling is the first clear sign."""
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):  # host values
        return not end <= _GROWTH * start + _GROWTH_ATOL
    return jnp.logical_not(end <= _GROWTH * start + _GROWTH_ATOL)


def solver_label(solver) -> str:
    """``"Euler(dt=0.1)"``: the solver's class, with its step size where it has one."""
    dt = getattr(solver, "dt", None)
    if dt is None:
        return type(solver).__name__
    return f"{type(solver).__name__}(dt={dt:g})" if isinstance(dt, (int, float)) else f"{type(solver).__name__}(dt={dt})"


def divergence_hint(solver) -> str:
    """What to do about a diverging inference with ``solver``."""
    if getattr(solver, "dt", None) is not None:
        var = getattr(solver, "descent_variable", "z")  # the activities z, or EPC's errors e
        return (
            f"the step size dt={solver.dt} is probably too large for these weights (gradient descent "
            f"is unstable when dt * lambda_max(d^2F/d{var}^2) > 2): lower dt, or use pcl.Newton() or, "
            f"for linear nets, pcl.ExactLinear()"
        )
    return ("the weights or data are probably too large or contain NaN/inf: check them, "
            "or lower the learning rate that produced these weights")


def divergence_message(solver, energy: float, steps, start: float | None = None) -> str:
    """One line for a :class:`~pclandscape.DivergenceError` raised by inference."""
    what = f"the energy is {energy:.4g}" if start is None else f"the energy went from {start:.4g} to {energy:.4g}"
    return f"Inference diverged: {what} in {steps} steps of {solver_label(solver)}; {divergence_hint(solver)}."
