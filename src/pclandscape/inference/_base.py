"""The solver interface shared by every inference solver."""

from __future__ import annotations

import abc

import equinox as eqx
from jaxtyping import Array

from ..networks import PCNetwork

__all__ = ["AbstractSolver"]


class AbstractSolver(eqx.Module):
    """Interface of an inference solver.

    A solver implements ``solve(net, x, y, z0) -> (activities, steps)``; ``tol`` is the
    residual ``max_i ||dF_i/dz_i||`` below which :func:`infer` reports convergence.
    """

    tol: eqx.AbstractVar[float]

    @property
    def aims_at_tol(self) -> bool:
        """Whether the solver iterates until the residual is ``<= tol`` (True here), rather than
        for a fixed budget whose end ``tol`` only labels. :func:`pclandscape.train` warns
        when such a solver left weight updates above ``tol``."""
        return True

    def advice(self, steps: int) -> str:
        """What to do after an inference by this solver that ended above ``tol`` after
        ``steps`` steps (a sentence for error and warning messages)."""
        return ("use more steps, pcl.Newton() (nonlinear nets) or pcl.ExactLinear() (linear nets), "
                "or a larger tol.")

    def check(self, net: PCNetwork) -> None:
        """Raise ``ValueError`` if this solver cannot handle ``net``."""

    def prepare(self, net: PCNetwork, y: Array) -> "AbstractSolver":
        """Validate against ``net`` and return the solver to use for targets ``y``."""
        type(self).check(self, net)
        return self

    @abc.abstractmethod
    def solve(self, net: PCNetwork, x: Array, y: Array, z0: tuple[Array, ...]):
        """Return ``(activities, steps)`` starting from the activities ``z0``."""

    def init_state(self) -> Array | None:
        """State the solver carries from one training step to the next (None: none).

        Only :class:`PaperEuler` has one (its batch step size, halved during inference and
        kept for the next call); :func:`pclandscape.train` threads it through every step."""
        return None

    def solve_with_state(self, net: PCNetwork, x: Array, y: Array, z0: tuple[Array, ...], state):
        """``(activities, steps, new_state)``: :meth:`solve` for a solver carrying ``state``."""
        z, steps = self.solve(net, x, y, z0)
        return z, steps, state

