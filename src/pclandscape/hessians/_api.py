"""The public Hessian functions and the method objects of the Hessian of ``F*``."""

from __future__ import annotations

import warnings

import equinox as eqx
from jaxtyping import Array, Float

from .._autodiff import MATRIX_FREE
from .._checks import check_dense_fits
from ..curvature import HessianOperator
from ..inference import AbstractSolver, Euler
from ..networks import MLP, PCNetwork
from ._coords import use_reduction
from ._implicit import check_finite, implicit_dense, implicit_energy_operator
from ._objectives import UnrolledObjective, loss_objective, objective_dense, objective_operator_jit, theory_objective

__all__ = ["Implicit", "Unrolled", "Theory", "loss_hessian", "loss_hessian_operator", "energy_hessian",
           "energy_hessian_operator"]


class Implicit(eqx.Module):
    """The exact Hessian of the numerical ``F*`` at the inference equilibrium (any network),
    ``H = F_tt - F_tz F_zz^{-1} F_zt``.

    Args:
        solver: the inference solver (default :func:`~pclandscape.default_solver`).
        tol: largest residual ``max_i ||dF_i/dz_i||`` accepted (default: the solver's ``tol``);
            above it :class:`~pclandscape.NotAtEquilibriumError`.
        linear_solve: the activity solves: ``"block"`` (closed-form blocks, MLPs), ``"dense"``,
            ``"cg"`` or ``"auto"`` (see :func:`~pclandscape.implicit_energy_operator`).
    """

    solver: AbstractSolver | None = None
    tol: float | None = None
    linear_solve: str = eqx.field(default="auto", static=True)


class Unrolled(eqx.Module):
    """Autodiff through the Euler steps of ``solver`` from the feedforward pass (what the paper
    did): the Hessian of ``F(theta, z_T(theta))``, exact only as ``T -> inf``."""

    solver: Euler = Euler()

    def __check_init__(self):
        if not isinstance(self.solver, Euler):
            raise ValueError(f"Unrolled differentiates through Euler steps; got solver={self.solver!r}.")


class Theory(eqx.Module):
    """The Hessian of the closed-form ``F*`` of Theorem 1 (linear MLPs without biases)."""


_BY_NAME = {"implicit": Implicit, "unrolled": Unrolled, "theory": Theory}


def _method(method, solver, tol, linear_solve):
    """A method object from ``method`` (an object, or one of the names with the old keywords)."""
    if isinstance(method, (Implicit, Unrolled, Theory)):
        if solver is not None or tol is not None or linear_solve != "auto":
            raise ValueError("solver=, tol= and linear_solve= belong to the method object, e.g. "
                             "pcl.Implicit(solver=..., tol=...); do not pass them beside it.")
        return method
    if method not in _BY_NAME:
        raise ValueError(f"method={method!r} is not known; use pcl.Implicit(), pcl.Unrolled() or pcl.Theory() "
                         f"(or the names {list(_BY_NAME)}).")
    if method == "implicit":
        return Implicit(solver, tol, linear_solve)
    if method == "unrolled":
        return Unrolled(Euler() if solver is None else solver)
    return Theory()


def _objective(net, method):
    if isinstance(method, Theory):
        if not (isinstance(net, MLP) and net.is_linear and net.biases is None):
            raise ValueError("method=Theory() needs a linear MLP without biases (Theorem 1); use "
                             "pcl.Implicit() for other networks.")
        return theory_objective
    return UnrolledObjective(method.solver)


def _check_fits(net, x, what):
    """Refuse a dense Hessian in the weights that cannot fit in memory (see :func:`check_dense_fits`)."""
    check_dense_fits(sum(int(w.size) for w in net.weights), x.dtype, what, MATRIX_FREE)


def _deprecated_form(form: str, name: str) -> bool:
    """Whether the old ``form=`` asks for an operator (warning that it is deprecated)."""
    if form not in ("dense", "operator"):
        raise ValueError(f"form={form!r} must be 'dense' or 'operator'.")
    if form == "operator":
        warnings.warn(f"{name}(..., form='operator') is deprecated: call {name}_operator(...).", DeprecationWarning,
                      stacklevel=3)
    return form == "operator"


def loss_hessian(
    net: PCNetwork,
    x: Float[Array, "N ..."],
    y: Float[Array, "N dy"],
    *,
    reduce_first_layer: bool | str = "auto",
    batch_size: int | None = None,
    form: str = "dense",
) -> Float[Array, "p p"]:
    """Dense Hessian of the MSE loss (Eq 1) with respect to the weights ``W_1..W_L``.

    Returns a ``(p, p)`` matrix in the order of docs/conventions.md (with the first-layer
    reduction when it pays; see :mod:`pclandscape.hessians`). Computed eagerly: call it outside
    ``jax.jit``. ``batch_size``: Hessian-vector products evaluated at once (``None``: as
    many as keep ``batch_size * p <= 2**24``, at least 64). ``form`` is deprecated (use
    :func:`loss_hessian_operator`).
    """
    if _deprecated_form(form, "loss_hessian"):
        return loss_hessian_operator(net, x, y)
    net.check_data(x, y)
    check_finite(net, x, y)
    _check_fits(net, x, "loss Hessian")
    return objective_dense(loss_objective, net, x, y, use_reduction(net, x, reduce_first_layer), batch_size)


def loss_hessian_operator(net: PCNetwork, x: Float[Array, "N ..."], y: Float[Array, "N dy"]) -> HessianOperator:
    """The Hessian of the MSE loss (Eq 1) as a matrix-free
    :class:`~pclandscape.curvature.HessianOperator` of size ``p`` (the flat weights, in the
    order of docs/conventions.md): ``op.mv(v)`` is ``H_L v`` for ``v`` of shape ``(p,)``,
    by forward-over-reverse autodiff (for Lanczos)."""
    net.check_data(x, y)
    check_finite(net, x, y)
    return objective_operator_jit(loss_objective, net, x, y)


def energy_hessian(
    net: PCNetwork,
    x: Float[Array, "N ..."],
    y: Float[Array, "N dy"],
    method: Implicit | Unrolled | Theory | str = Implicit(),
    *,
    reduce_first_layer: bool | str = "auto",
    batch_size: int | None = None,
    solver: AbstractSolver | None = None,
    tol: float | None = None,
    linear_solve: str = "auto",
    form: str = "dense",
) -> Float[Array, "p p"]:
    """Dense Hessian of the equilibrated energy ``F*(theta)`` with respect to ``W_1..W_L``.

    Args:
        net: the network (:class:`Theory` needs a linear MLP without biases).
        x: the batch's inputs ``(N, ...)``.
        y: its targets ``(N, d_y)``.
        method: :class:`Implicit` (exact at the numerical equilibrium, any network; the
            default), :class:`Theory` (closed form, Theorem 1) or :class:`Unrolled` (autodiff
            through Euler steps, as in the paper), each carrying its own settings. The names
            ``"implicit"``, ``"theory"``, ``"unrolled"`` with ``solver=``, ``tol=``,
            ``linear_solve=`` beside them are shorthands for those objects.
        reduce_first_layer: use the ``U = X W_1^T`` coordinates (``"auto"``: when ``N < d_x``
            for an MLP predicting ``W f(z)``).
        batch_size: Hessian-vector products evaluated at once (``None``: as many as keep
            ``batch_size * p <= 2**24``, at least 64).
        form: deprecated; use :func:`energy_hessian_operator` for the operator.

    Returns:
        The ``(p, p)`` array in the order of docs/conventions.md, computed eagerly (the
        inference residual is checked on the host): call it outside ``jax.jit``.
    """
    if _deprecated_form(form, "energy_hessian"):
        return energy_hessian_operator(net, x, y, _method(method, solver, tol, linear_solve))
    method = _method(method, solver, tol, linear_solve)
    net.check_data(x, y)
    check_finite(net, x, y)
    _check_fits(net, x, "Hessian of F*")
    reduced = use_reduction(net, x, reduce_first_layer)
    if isinstance(method, Implicit):
        return implicit_dense(net, x, y, method.solver, method.tol, method.linear_solve, reduced, batch_size)
    return objective_dense(_objective(net, method), net, x, y, reduced, batch_size)


def energy_hessian_operator(
    net: PCNetwork,
    x: Float[Array, "N ..."],
    y: Float[Array, "N dy"],
    method: Implicit | Unrolled | Theory | str = Implicit(),
) -> HessianOperator:
    """The Hessian of ``F*`` as a matrix-free :class:`~pclandscape.curvature.HessianOperator`
    of size ``p`` (the flat weights, in the order of docs/conventions.md; ``op.mv(v)`` takes
    and returns shape ``(p,)``), for :func:`~pclandscape.lanczos`; ``method`` as for
    :func:`energy_hessian` (:class:`Implicit`: ``F_tt v - F_tz F_zz^{-1} F_zt v``). :class:`Implicit` runs the inference now and refuses a point away
    from the equilibrium."""
    method = _method(method, None, None, "auto")
    net.check_data(x, y)
    check_finite(net, x, y)
    if isinstance(method, Implicit):
        return implicit_energy_operator(net, x, y, solver=method.solver, tol=method.tol, linear_solve=method.linear_solve)
    return objective_operator_jit(_objective(net, method), net, x, y)
