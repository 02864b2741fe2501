"""Exceptions raised by pclandscape, each with a message that says what to do."""

from __future__ import annotations

__all__ = ["DivergenceError", "NotAtEquilibriumError"]


class DivergenceError(FloatingPointError):
    """Inference or training produced non-finite values (NaN or inf).

    Attributes set where available: ``step`` (training step), ``history`` (the training
    history up to the last finite step) and ``net`` (the last finite network).
    """

    def __init__(self, message: str, *, step: int | None = None, history=None, net=None):
        super().__init__(message)
        self.step = step
        self.history = history
        self.net = net


class NotAtEquilibriumError(ValueError):
    """A formula that holds only at the inference equilibrium was asked for away from it."""
