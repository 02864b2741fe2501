"""One training step of each rule: :func:`bp_step`, :func:`pc_step`, and what they return."""

from __future__ import annotations

import functools
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array

from .._divergence import divergence_hint, diverging, solver_label
from ..errors import DivergenceError
from ..inference import AbstractSolver, Euler
from ..inference._infer import infer_with_state, resolve_solver
from ..networks import PCNetwork
from ..objectives import mse_loss, pc_energy

__all__ = ["StepInfo", "bp_step", "pc_step", "init_opt_state", "BP", "PC", "as_rule", "DEFAULT_OPTIMIZER", "bp_update", "pc_update",
           "scalar", "step_ok", "params", "diverged_message"]


class BP(eqx.Module):
    """The backprop rule: each step follows the gradient of the MSE loss (Eq 1)."""


class PC(eqx.Module):
    """The predictive-coding rule: inference to equilibrium with ``solver`` (default
    :func:`~pclandscape.default_solver`), then the weight gradient of the energy (Eq 2) at the
    equilibrium activities."""

    solver: AbstractSolver | None = None

    def __check_init__(self):
        if self.solver is not None and not isinstance(self.solver, AbstractSolver):
            raise ValueError(f"PC(solver={self.solver!r}): pass an inference solver such as pcl.Newton() or "
                             f"pcl.Euler(dt=0.1, steps=50).")


def as_rule(rule, solver) -> tuple[str, AbstractSolver | None]:
    """``("bp" | "pc", solver)`` from a rule object (:class:`BP`, :class:`PC`) or its name
    (``"bp"``, or ``"pc"`` with ``solver=`` beside it). A solver given where no inference runs
    (backprop), or beside a :class:`PC` object, is an error rather than ignored."""
    if isinstance(rule, PC):
        if solver is not None:
            raise ValueError("solver= belongs to the rule: pass rule=pcl.PC(solver=...), not solver= beside it.")
        return "pc", rule.solver
    if isinstance(rule, BP) or rule == "bp":
        if solver is not None:
            raise ValueError(f"rule={rule!r} (backprop) runs no inference, so solver={solver!r} would be ignored; "
                             f"drop it, or train with rule=pcl.PC(solver=...).")
        return "bp", None
    if rule == "pc":
        return "pc", solver
    raise ValueError(f"rule={rule!r} is not known; use pcl.PC(solver=...) (predictive coding) or pcl.BP() (backprop), "
                     f"or the names 'pc' / 'bp'.")


class StepInfo(eqx.Module):
    """Diagnostics of one training step (all scalars, measured before the update).

    Attributes:
        loss: MSE loss (Eq 1) of the batch at the feedforward pass.
        energy: energy (Eq 2) at the inference equilibrium (PC); NaN for BP.
        grad_norm: L2 norm of the weight gradient of the rule's objective (Eq 1 for BP,
            Eq 2 at the equilibrium for PC), before ``grad_scale``.
        inference_grad_norm: inference residual ``max_i ||dF_i/dz_i||`` (PC); NaN for BP.
        converged: whether inference reached its tolerance (PC); True for BP.
        inference_dt: the inference step size in force after this step, which the next step
            starts from (:class:`pclandscape.PaperEuler`, whose notebook halved it and kept
            it); NaN for every other solver and for BP.
    """

    loss: Array
    energy: Array
    grad_norm: Array
    inference_grad_norm: Array
    converged: Array
    inference_dt: Array


DEFAULT_OPTIMIZER = optax.sgd(1e-3)  # one object: compiled training loops are cached on it


def params(net):
    return eqx.filter(net, eqx.is_inexact_array)


def init_opt_state(net: PCNetwork, optimizer: optax.GradientTransformation):
    """``optimizer.init`` on the trainable arrays (weights and biases) of ``net``."""
    return optimizer.init(params(net))


def _global_norm(tree) -> Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(tree)))


def _apply(net, grads, opt_state, optimizer, grad_scale):
    gnorm = _global_norm(grads)
    grads = jax.tree_util.tree_map(lambda g: (grad_scale * g).astype(g.dtype), grads)
    updates, opt_state = optimizer.update(grads, opt_state, params(net))
    return eqx.apply_updates(net, updates), opt_state, gnorm


def _bp_step_impl(net, opt_state, x, y, optimizer, grad_scale):
    loss, grads = eqx.filter_value_and_grad(mse_loss)(net, x, y)
    net, opt_state, gnorm = _apply(net, grads, opt_state, optimizer, grad_scale)
    nan = jnp.full((), jnp.nan, loss.dtype)
    return net, opt_state, StepInfo(loss, nan, gnorm, nan, jnp.asarray(True), nan)


def _pc_step_impl(net, opt_state, x, y, optimizer, solver, grad_scale, solver_state=None):
    eq, solver_state = infer_with_state(net, x, y, solver, None, solver_state)
    z = jax.lax.stop_gradient(eq.activities)
    energy, grads = eqx.filter_value_and_grad(lambda n: pc_energy(n, z, x, y))(net)
    loss = mse_loss(net, x, y)
    net, opt_state, gnorm = _apply(net, grads, opt_state, optimizer, grad_scale)
    dt = jnp.full((), jnp.nan, loss.dtype) if solver_state is None else jnp.asarray(solver_state, loss.dtype)
    return net, opt_state, StepInfo(loss, energy, gnorm, eq.grad_norm, eq.converged, dt)


bp_update = eqx.filter_jit(_bp_step_impl)
"""The BP step as a filtered-jit function ``(net, opt_state, x, y, optimizer, scale)``, for fused loops."""
pc_update = eqx.filter_jit(_pc_step_impl)
"""The PC step ``(net, opt_state, x, y, optimizer, solver, scale, solver_state)``, for fused loops."""
# Per-call entry points: a plain jax.jit with the optimizer (and solver) static dispatches in
# less than half the time of eqx.filter_jit (measured: 209 vs 439 us per call of a tiny PC
# step on a 2-core CPU), but needs every other argument to be a pytree of arrays; anything
# else falls back to the filtered form (see _dispatch).
_bp_step_plain = jax.jit(_bp_step_impl, static_argnums=(4,))
_pc_step_plain = jax.jit(_pc_step_impl, static_argnums=(4, 5))


def _dispatch(plain, filtered, *args):
    """``plain(*args)``, or ``filtered(*args)`` where plain jit cannot take the arguments (a
    leaf that is not an array, an unhashable optimizer or solver)."""
    try:
        return plain(*args)
    except (TypeError, ValueError):  # raised before tracing for such arguments; a genuine
        return filtered(*args)  # error inside the step is raised again by the filtered call


# The per-step entry points call methods unbound (``type(net).check_data(net, ...)``, see
# ``inference.resolve_solver``): a Python loop of training steps would pay for equinox's
# bound-method wrappers on every step.


def scalar(value) -> Array:
    """``value`` as a scalar array of the default float type, cached (no transfer per step)."""
    return _scalar_cached(float(value), jnp.dtype(jnp.result_type(float)))


@functools.lru_cache(maxsize=64)
def _scalar_cached(value: float, dtype) -> Array:
    return jnp.asarray(value, dtype)


def bp_step(
    net: PCNetwork,
    opt_state,
    x: Array,
    y: Array,
    optimizer: optax.GradientTransformation,
    *,
    grad_scale: float = 1.0,
) -> tuple[PCNetwork, Any, StepInfo]:
    """One backprop step: ``theta <- optimizer(grad_scale * dL/dtheta)`` with ``L`` of Eq 1.

    Returns ``(net, opt_state, StepInfo)``. Jit-compiled (the optimizer is static).
    """
    type(net).check_data(net, x, y)
    return _dispatch(_bp_step_plain, bp_update, net, opt_state, x, y, optimizer, scalar(grad_scale))


def pc_step(
    net: PCNetwork,
    opt_state,
    x: Array,
    y: Array,
    optimizer: optax.GradientTransformation,
    solver: AbstractSolver | None = None,
    *,
    grad_scale: float = 1.0,
    solver_state=None,
    check: bool = True,
) -> tuple[PCNetwork, Any, StepInfo]:
    """One PC step: inference to equilibrium, then ``theta <- optimizer(grad_scale * dF/dtheta|_{z*})``.

    ``F`` is the energy of Eq 2 (mean over the batch) and ``z*`` the activities found by
    ``solver`` (default :func:`pcl.default_solver <pclandscape.default_solver>`), held fixed.
    ``solver_state`` is the state a solver carries between steps (default
    ``solver.init_state()``): for :class:`pclandscape.PaperEuler` pass the previous step's
    ``info.inference_dt`` to continue as the paper's notebooks did (``pcl.train`` does this).
    Returns ``(net, opt_state, StepInfo)``. Jit-compiled.

    With ``check`` (default) it raises :class:`~pclandscape.DivergenceError` (``.net`` = the
    network before the step) when the inference diverged: the equilibrium energy is not finite
    or more than double the feedforward loss it started from (an unstable solver; a stable
    descent never raises the energy). The check reads two scalars back from the device; pass
    ``check=False`` to keep a loop of steps asynchronous and inspect ``info`` yourself.
    """
    type(net).check_data(net, x, y)
    solver = resolve_solver(net, y, solver)
    if solver_state is None:
        solver_state = type(solver).init_state(solver)
    out = _dispatch(_pc_step_plain, pc_update, net, opt_state, x, y, optimizer, solver, scalar(grad_scale),
                    solver_state)
    if check:
        info = out[2]
        loss, energy = float(info.loss), float(info.energy)
        if not math.isfinite(loss) or diverging(net.output_precision * loss, energy):
            raise DivergenceError(diverged_message("pc", 0, info, optimizer, solver, net.output_precision).replace(" at step 0", ""), net=net)
    return out



def step_ok(rule, info: StepInfo, new_net):
    """Whether a training step may be applied: finite loss and gradient, finite weights after
    the update, and (PC) an inference that did not diverge -- its equilibrium energy finite and
    not more than double the energy it started from, the feedforward loss (see
    ``pclandscape._divergence.diverging``). Traceable; a scalar boolean."""
    ok = jnp.isfinite(info.loss) & jnp.isfinite(info.grad_norm)
    ok &= jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(params(new_net))]))
    if rule == "pc":  # the feedforward energy is the loss times the output precision
        ok &= ~diverging(new_net.output_precision * info.loss, info.energy)
    return ok



def diverged_message(rule, step, info: StepInfo, optimizer_name, solver, precision: float = 1.0) -> str:
    what = ", ".join(
        f"{k}={float(v):.3g}" for k, v in (("loss", info.loss), ("energy", info.energy), ("grad_norm", info.grad_norm))
        if not (k == "energy" and rule == "bp")
    )
    cause = "the learning rate is probably too large: lower it"
    loss, energy = float(info.loss), float(info.energy)
    if step == 0 and not math.isfinite(loss):  # before any update: not the learning rate
        cause = ("the loss is not finite at the weights training started from, before any update: they hold NaN "
                 "or inf, or are so large that the predictions overflow; the learning rate is not the cause")
    if rule == "pc" and math.isfinite(loss) and bool(diverging(precision * loss, energy)):
        return (
            f"Training (PC) stopped at step {step}: inference diverged, the energy went from {loss:.4g} (feedforward) "
            f"to {energy:.4g} in {solver_label(solver)} inference: {divergence_hint(solver)}. "
            f"The error carries .history and .net up to the last good step."
        )
    if rule == "pc" and isinstance(solver, Euler):
        cause += (
            f", or the inference step size dt={solver.dt} is too large for the current weights "
            f"(Euler is unstable when dt * lambda_max(d^2F/dz^2) > 2): lower dt or use pcl.Newton()"
        )
    return (
        f"Training ({rule.upper()}) diverged at step {step}: {what}. Likely cause: {cause}. "
        f"The error carries .history and .net up to the last finite step."
    )
