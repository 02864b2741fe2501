"""The implicit Hessian of ``F*``: ``H = F_tt - F_tz F_zz^{-1} F_zt`` at the equilibrium."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

from .._autodiff import dense_matrix
from .._divergence import divergence_message
from .._energies import per_sample_energies
from .._linalg import inv_per_sample, per_sample_cg
from ..activity_hessian import (dense_activity_hessian, error_preconditioner, factor_activity_hessian, per_sample_flat,
                               unflatten_per_sample)
from ..curvature import HessianOperator
from ..errors import DivergenceError, NotAtEquilibriumError
from ..inference import AbstractSolver, infer
from ..inference._infer import infer_compiled, resolve_solver
from ..kinks import activities_on_kinks
from ..networks import MLP, PCNetwork, is_standard_mlp
from ._coords import Coords, expand, make_coords
from ._objectives import ONE_OFF

__all__ = ["implicit_energy_operator", "implicit_dense", "check_finite"]


class _DenseInverse(eqx.Module):
    """Per-sample inverses of dense activity Hessians, ``(N, m, m)``."""

    inv: Array

    def solve(self, b):
        # one batched matmul per product (LAPACK solves inside the lax.map that forms dense
        # Hessians were seen to deadlock XLA:CPU)
        sol = jnp.einsum("nij,nj->ni", self.inv, per_sample_flat(b))
        return unflatten_per_sample(sol, b)


class _ImplicitArgs(eqx.Module):
    coords: Coords
    unravel: Callable = eqx.field(static=True)
    phi: Array
    z: tuple
    y: Array
    activity: Any  # BlockTridiagonalInverse | _DenseInverse | None (conjugate gradients)
    cg_rtol: float = eqx.field(static=True)
    cg_max_steps: int = eqx.field(static=True)


def _energy_sum(args: _ImplicitArgs, phi_flat, z):
    net, xx = args.coords.build(args.unravel(phi_flat))
    return jnp.sum(per_sample_energies(net, z, xx, args.y))


def _grad_z(args, phi_flat, z):
    return jax.grad(_energy_sum, argnums=2)(args, phi_flat, z)


def _solve_activity(args: _ImplicitArgs, b):
    """Solve ``(d^2 E / dz^2) w = b``; ``E = sum_i F_i`` is block diagonal over samples."""
    if args.activity is not None:
        return args.activity.solve(b)
    matvec = lambda t: jax.jvp(lambda zz: _grad_z(args, args.phi, zz), (args.z,), (t,))[1]
    net, xx = args.coords.build(args.unravel(args.phi))
    # in the error coordinates (see pcl.CG): about d_y + 1 products at any depth
    return per_sample_cg(matvec, b, args.cg_rtol, args.cg_max_steps, error_preconditioner(net, args.z, xx, args.y))


def _implicit_mv(args: _ImplicitArgs, v):
    """``H v = F_tt v - F_tz F_zz^{-1} F_zt v`` at ``(phi, z*)``, with ``F = E / N``."""
    n = args.y.shape[0]
    b = jax.jvp(lambda p: _grad_z(args, p, args.z), (args.phi,), (v,))[1]
    w = _solve_activity(args, b)
    grad_t = lambda p, zz: jax.grad(_energy_sum, argnums=1)(args, p, zz) / n
    neg_w = jax.tree_util.tree_map(jnp.negative, w)
    return jax.jvp(grad_t, (args.phi, args.z), (v, neg_w))[1]


class _Settings(eqx.Module):
    """Static settings of the implicit Hessian: how activity systems are solved."""

    solve: str = eqx.field(static=True)  # "block" | "dense" | "cg"
    shared: bool = eqx.field(static=True)  # one activity Hessian for all samples (linear, no NaN)
    cg_rtol: float = eqx.field(static=True)
    cg_max_steps: int = eqx.field(static=True)


def _implicit_operator(net, x, y, z, reduced, settings: _Settings) -> HessianOperator:
    coords = make_coords(net, x, reduced)
    flat, unravel = ravel_pytree(coords.phi(net))
    activity = None
    if len(z) and settings.solve != "cg":
        net_c, xx = coords.build(unravel(flat))
        if settings.solve == "block":
            activity = factor_activity_hessian(net_c, z, xx, y, shared=settings.shared)
        else:
            activity = _DenseInverse(inv_per_sample(dense_activity_hessian(net_c, z, xx, y)))
    args = _ImplicitArgs(coords, unravel, flat, tuple(z), y, activity, settings.cg_rtol, settings.cg_max_steps)
    return HessianOperator(fn=_implicit_mv, args=args, size=int(flat.size), dtype=flat.dtype)


@eqx.filter_jit
def implicit_operator_jit(net, x, y, z, settings):
    return _implicit_operator(net, x, y, z, False, settings)


@eqx.filter_jit(**ONE_OFF)
def _implicit_dense_coords(net, x, y, solver, reduced, settings, batch_size):
    """Inference, then the dense implicit Hessian in the Hessian coordinates, as one program
    (compiled once, at low optimisation: see ``ONE_OFF``). Returns ``(Equilibrium, H)``."""
    eq = infer_compiled(net, x, y, solver, None)
    return eq, dense_matrix(_implicit_operator(net, x, y, eq.activities, reduced, settings), batch_size)


def implicit_dense(net, x, y, solver, tol, linear_solve, reduced, batch_size):
    solver = resolve_solver(net, y, solver)
    settings = _implicit_settings(net, x, y, linear_solve, None)
    eq, h = _implicit_dense_coords(net, x, y, solver, reduced, settings, batch_size)
    _check_equilibrium(net, eq, solver, tol)  # the formula holds only there: refuse otherwise
    return expand(h, x, net.weights[0].shape[0]) if reduced else h


def _activity_size(net, x) -> int:
    """Hidden activities per sample (the size of one diagonal block of ``F_zz``)."""
    shapes = jax.eval_shape(net.feedforward, x)[:-1]
    return int(sum(np.prod(s.shape[1:]) for s in shapes))


def _equilibrium(net, x, y, solver, tol):
    solver = resolve_solver(net, y, solver)
    eq = infer(net, x, y, solver)
    _check_equilibrium(net, eq, solver, tol)
    return eq


def _check_equilibrium(net, eq, solver, tol) -> None:
    if not bool(jnp.isfinite(eq.energy)):
        raise DivergenceError(divergence_message(solver, float(eq.energy), int(eq.steps)))
    tol = eq.tol if tol is None else tol
    if not float(eq.grad_norm) <= tol:
        raise NotAtEquilibriumError(
            f"inference residual ||dF/dz|| = {float(eq.grad_norm):.3g} exceeds tol = {tol:g}: the "
            f"implicit Hessian H = F_tt - F_tz F_zz^-1 F_zt holds only at an equilibrium. Use a "
            f"solver that converges (pcl.ExactLinear() for linear nets, pcl.Newton(tol=...) for "
            f"nonlinear ones) or pass a larger tol. This solver: {solver.advice(int(eq.steps))}"
        )
    on_kinks = int(activities_on_kinks(net, eq.activities))
    if on_kinks:
        raise NotAtEquilibriumError(
            f"{on_kinks} activities of this equilibrium sit exactly at the kink of "
            f"{net.activation_name} (z = 0), where the energy is not twice differentiable: the "
            f"implicit Hessian (implicit function theorem) does not exist there. Use the loss "
            f"Hessian, or a smooth activation such as 'tanh'."
        )


def _implicit_settings(net, x, y, linear_solve, cg_rtol, cg_max_steps=500) -> _Settings:
    """How the activity systems are solved."""
    if linear_solve not in ("auto", "block", "dense", "cg"):
        raise ValueError(f"linear_solve={linear_solve!r} must be 'auto', 'block', 'dense' or 'cg'.")
    if linear_solve == "block" and not is_standard_mlp(net):
        raise ValueError("linear_solve='block' needs an MLP; use 'dense' or 'cg' for this network.")
    if linear_solve == "auto":
        m = _activity_size(net, x)
        linear_solve = "block" if is_standard_mlp(net) else ("dense" if m <= 1024 else "cg")
    shared = isinstance(net, MLP) and net.is_linear and not bool(np.isnan(np.asarray(y)).any())
    rtol = float(cg_rtol if cg_rtol is not None else 100 * jnp.finfo(jnp.result_type(x)).eps)
    return _Settings(linear_solve, shared, rtol, int(cg_max_steps))


def implicit_energy_operator(
    net: PCNetwork,
    x: Array,
    y: Array,
    *,
    solver: AbstractSolver | None = None,
    tol: float | None = None,
    linear_solve: str = "auto",
    cg_rtol: float | None = None,
    cg_max_steps: int = 500,
) -> HessianOperator:
    """The exact Hessian of the numerical ``F*`` at the equilibrium, as a matrix-free operator.

    Runs inference with ``solver`` (raising :class:`NotAtEquilibriumError` for a residual
    above ``tol``), then returns a :class:`~pclandscape.curvature.HessianOperator` on the
    flat weights whose product is ``F_tt v - F_tz F_zz^{-1} F_zt v``. ``linear_solve``:
    ``"dense"`` (per-sample inverse of the activity Hessian, formed once), ``"cg"``
    (matrix-free conjugate gradients in every product, to ``cg_rtol``, preconditioned in the
    error coordinates as ``pcl.CG(precondition=True)``) or ``"auto"`` (dense
    when a sample has at most 1024 activities).
    """
    net.check_data(x, y)
    check_finite(net, x, y)
    eq = _equilibrium(net, x, y, solver, tol)
    settings = _implicit_settings(net, x, y, linear_solve, cg_rtol, cg_max_steps)
    return implicit_operator_jit(net, x, y, tuple(eq.activities), settings)


def check_finite(net, x, y) -> None:
    """Hessians at NaN/inf weights or inputs are NaN: refuse them with the reason. Targets may
    hold NaN (unobserved entries), never inf."""
    bad = [name for name, ok in (
        ("weights", all(bool(jnp.all(jnp.isfinite(w))) for w in net.weights)),
        ("inputs x", bool(jnp.all(jnp.isfinite(x)))),
        ("targets y", not bool(jnp.any(jnp.isinf(y)))),
    ) if not ok]
    if bad:
        raise ValueError(f"the {' and '.join(bad)} hold NaN or inf: a Hessian there is NaN. Check them (a diverged "
                         f"training run?).")
