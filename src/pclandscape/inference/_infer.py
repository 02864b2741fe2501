"""The entry points: :func:`infer`, its result :class:`Equilibrium`, the default solver and
:func:`equilibrated_energy`."""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._divergence import divergence_message, diverging
from .._energies import per_sample_norm
from ..errors import DivergenceError
from ..kinks import stationarity_residual
from ..networks import MLP, PCNetwork
from ..objectives import check_activities, pc_energy
from ._base import AbstractSolver
from ._exact import ExactLinear
from ._newton import Newton

__all__ = ["Equilibrium", "default_solver", "resolve_solver", "infer_with_state", "infer_compiled", "infer",
           "equilibrated_energy"]


class Equilibrium(eqx.Module):
    """Result of :func:`infer`.

    Attributes:
        activities: hidden activities ``(z_1, ..., z_{L-1})`` at the end of inference.
        energy: energy ``F`` (Eq 2) at those activities; the numerical ``F*(theta)``.
        grad_norm: residual ``max_i ||dF_i/dz_i||_2`` at the end (min-norm subgradient
            on ReLU kinks, see :func:`pclandscape.kinks.stationarity_residual`).
        steps: number of solver steps taken (largest over samples for adaptive solvers).
        converged: ``grad_norm <= tol``.
        tol: the solver's tolerance.
    """

    activities: tuple[Array, ...]
    energy: Array
    grad_norm: Array
    steps: Array
    converged: Array
    tol: float = eqx.field(static=True)


def default_solver(net: PCNetwork) -> AbstractSolver:
    """The solver :func:`infer` uses when none is given.

    ``ExactLinear()`` for linear MLPs (one direct solve), otherwise ``Newton()`` (stops at a
    residual ``<= 1e-5``; conjugate gradients preconditioned in the error coordinates, so its
    cost per iteration grows only linearly with depth: in ``benchmarks/inference.py`` and
    ``benchmarks/depth.py`` 5-40x faster to that residual than gradient flow or Heun on
    shallow nets and more than 600x at 128 layers, and the only solver here that reaches the
    kink equilibria of ReLU nets, see :mod:`pclandscape.kinks`).
    """
    if isinstance(net, MLP) and net.is_linear:
        return ExactLinear()
    return Newton()


def resolve_solver(net: PCNetwork, y: Array, solver: AbstractSolver | None) -> AbstractSolver:
    """``solver`` (default :func:`default_solver`) validated and prepared for ``net`` and ``y``.

    Methods are called unbound: every bound-method access on an equinox Module builds a
    wrapper Module (~50 us each on a small CPU), which per-step callers would pay each step."""
    solver = default_solver(net) if solver is None else solver
    if not isinstance(solver, AbstractSolver):
        raise ValueError(
            f"solver must be an inference solver (pcl.Euler(), pcl.Heun(), pcl.Newton() or "
            f"pcl.ExactLinear()), got {solver!r}."
        )
    return type(solver).prepare(solver, net, y)


def infer_with_state(net, x, y, solver, init, state):
    """``(Equilibrium, new_state)``: inference carrying the solver's state (see
    :meth:`AbstractSolver.init_state`); traceable, no checks (use :func:`infer` for those)."""
    z0 = net.feedforward(x)[:-1] if init is None else tuple(init)
    z, steps, state = solver.solve_with_state(net, x, y, z0, state)
    g = stationarity_residual(net, z, x, y)
    gnorm = jnp.max(per_sample_norm(g)) if len(g) else jnp.zeros((), x.dtype)
    energy = pc_energy(net, z, x, y)
    eq = Equilibrium(
        activities=tuple(z),
        energy=energy,
        grad_norm=gnorm,
        steps=steps,
        converged=gnorm <= solver.tol,
        tol=solver.tol,
    )
    return eq, state


@eqx.filter_jit
def infer_compiled(net, x, y, solver, init):
    """:func:`infer` without its checks, compiled: the building block of the Hessians of ``F*``."""
    return infer_with_state(net, x, y, solver, init, solver.init_state())[0]


@eqx.filter_jit
def _infer_from(net, x, y, solver, init):
    """``(Equilibrium, energy at the starting activities)`` in one compiled call: what
    :func:`infer` needs to tell a diverging inference (the energy rose) from a slow one."""
    z0 = net.feedforward(x)[:-1] if init is None else tuple(init)
    eq = infer_with_state(net, x, y, solver, z0, solver.init_state())[0]
    return eq, pc_energy(net, z0, x, y)


def _is_traced(*trees) -> bool:
    leaves = jax.tree_util.tree_leaves(trees)
    return any(isinstance(a, jax.core.Tracer) for a in leaves)


def infer(
    net: PCNetwork,
    x: Float[Array, "N ..."],
    y: Float[Array, "N dy"],
    solver: AbstractSolver | None = None,
    *,
    init=None,
) -> Equilibrium:
    """Run PC inference to (near) equilibrium and report how close it got (contract).

    Activities start from the feedforward pass (where ``F`` equals the MSE loss), unless
    ``init`` gives them.

    Args:
        net: the network.
        x: inputs ``(N, d_x)`` (``(N, C, H, W)`` for the CNN), clamped as ``z_0``.
        y: targets ``(N, d_y)``, clamped as ``z_L``.
        solver: :class:`Euler`, :class:`Heun`, :class:`ExactLinear` or :class:`Newton`; default
            :func:`default_solver`.
        init: optional starting activities ``(z_1, ..., z_{L-1})``.

    Returns:
        An :class:`Equilibrium` (activities, energy, grad_norm, steps, converged). ``grad_norm``
        is computed in the precision the inference ran in; in float32 on wide nets its rounding
        approaches a 1e-5 tolerance: :func:`verify_equilibrium` evaluates it in float64.

    Raises:
        ValueError: for data that do not fit the network, or a solver that cannot handle it.
        DivergenceError: if inference produced NaN or inf, or more than doubled the energy
            it started from (an unstable solver: a stable descent never raises it).
    """
    net.check_data(x, y)
    solver = resolve_solver(net, y, solver)
    if init is not None:
        init = check_activities(net, init, x)
    eq, start = _infer_from(net, x, y, solver, init)
    if _is_traced(eq):
        energy = eqx.error_if(
            eq.energy,
            diverging(start, eq.energy),
            "Inference diverged (the energy is non-finite or more than doubled); lower the Euler step size dt "
            "or use pcl.Newton().",
        )
        return eqx.tree_at(lambda e: e.energy, eq, energy)
    if not bool(jnp.isfinite(start)):
        raise ValueError(
            f"The energy at the start of inference is {float(start)}: the weights, inputs or targets hold NaN or "
            f"inf (targets may hold NaN only to mark unobserved entries). Check them before inference."
        )
    if bool(diverging(start, eq.energy)):
        raise DivergenceError(divergence_message(solver, float(eq.energy), int(eq.steps), float(start)))
    return eq


def equilibrated_energy(
    net: PCNetwork,
    x: Float[Array, "N ..."],
    y: Float[Array, "N dy"],
    solver: AbstractSolver | None = None,
) -> Float[Array, ""]:
    """The numerical equilibrated energy ``F*(theta)``: the energy at the end of inference (contract).

    Warns (``RuntimeWarning``) when the inference did not reach its tolerance; use
    :func:`infer` to get the residual ``grad_norm`` with the energy.
    """
    eq = infer(net, x, y, solver)
    if not _is_traced(eq) and not bool(eq.converged):
        advice = resolve_solver(net, y, solver).advice(int(eq.steps))
        warnings.warn(
            f"inference did not converge: residual ||dF/dz|| = {float(eq.grad_norm):.3g} > "
            f"tol = {eq.tol:g}, so this is not F* at an equilibrium; {advice}",
            RuntimeWarning,
            stacklevel=2,
        )
    return eq.energy
