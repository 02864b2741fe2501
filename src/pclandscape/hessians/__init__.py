"""Weight-space Hessians of a network's loss ``L(theta)`` and equilibrated energy ``F*(theta)``.

:func:`energy_hessian` (dense) and :func:`energy_hessian_operator` (matrix-free) take one of
three method objects, each with its own settings:

:class:`Theory`
    The Hessian of the closed-form ``F*`` of Theorem 1 (linear MLPs without biases).
:class:`Unrolled` ``(solver=Euler(...))``
    Autodiff through ``T`` Euler inference steps started at the feedforward pass (what the
    paper did): the Hessian of ``F(theta, z_T(theta))``, exact only as ``T -> inf``.
:class:`Implicit` ``(solver, tol, linear_solve)``
    The exact Hessian of the numerical ``F*(theta) = F(theta, z*(theta))`` at the inference
    equilibrium ``z*`` of *any* network, by the implicit function theorem::

        H = F_tt - F_tz F_zz^{-1} F_zt          (t = weights, z = hidden activities)

    valid only where ``dF/dz = 0``: it refuses to run when the inference residual exceeds
    the tolerance. ``F_zz`` is block diagonal over samples; each block is inverted densely
    (small layers; closed-form blocks for MLPs, see :mod:`pclandscape.activity_hessian`) or
    solved by conjugate gradients (matrix-free).

**First-layer reduction.** Every objective here depends on ``W_1`` only through the
first-layer predictions ``U = X W_1^T`` (``N x n_1``). When ``N < d_x`` the dense Hessians are
computed in the coordinates ``(U, W_2, ..., W_L)`` -- the network with ``W_1`` replaced by the
identity, fed ``U`` -- and mapped back with ``H_W1W1 = J^T H_UU J``, ``J = dU/dW_1``. For an
MNIST net this cuts the number of Hessian-vector products from ``784 n_1 + ...`` to
``N n_1 + ...``.

The ``*_operator`` functions return a :class:`~pclandscape.curvature.HessianOperator` on the
full weight vector instead of a dense matrix, for :func:`~pclandscape.curvature.lanczos`.

**Layout.** ``_coords`` (coordinates, first-layer reduction), ``_objectives`` (Hessians of
autodiff objectives), ``_implicit`` (the implicit Hessian), ``_api`` (the functions and the
method objects).
"""

from __future__ import annotations

from ._api import (
    Implicit as Implicit,
    Theory as Theory,
    Unrolled as Unrolled,
    energy_hessian as energy_hessian,
    energy_hessian_operator as energy_hessian_operator,
    loss_hessian as loss_hessian,
    loss_hessian_operator as loss_hessian_operator,
)
from ._implicit import implicit_energy_operator as implicit_energy_operator

__all__ = ["energy_hessian", "energy_hessian_operator", "loss_hessian", "loss_hessian_operator",
           "implicit_energy_operator", "Implicit", "Unrolled", "Theory"]
