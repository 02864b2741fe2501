"""Fixed-step gradient flow: :class:`Euler` (per sample) and :class:`PaperEuler` (the paper's
notebooks' batch-level step-size control)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from .._checks import positive_int, positive_number
from .._energies import activity_grad, energies_and_grads, per_sample_norm
from .._linalg import per_row
from .._stacked import stacked_mlp
from ._base import AbstractSolver

__all__ = ["Euler", "PaperEuler"]


class Euler(AbstractSolver):
    """Explicit Euler on the inference dynamics, ``z <- z - dt * dF_i/dz`` for ``steps`` steps.

    A plain ``lax.fori_loop`` (no ODE-library overhead). This is the paper's default
    (``dt = 0.1``; ``T`` = number of steps). It does not stop early and does not adapt
    ``dt``; it is stable while ``dt < 2 / lambda_max(d^2 F_i / dz^2)``.

    With ``backtrack=True`` a step that would raise a sample's energy is rejected and that
    sample's ``dt`` halved (the paper's training code halved ``dt`` whenever the energy
    rose); this costs one extra energy evaluation per step.

    With ``stop_at_tol=True`` ``steps`` is a maximum: the loop stops as soon as every sample's
    residual ``||dF_i/dz_i||`` is ``<= tol`` (gradient flow run to a verified equilibrium; the
    residual is the gradient the step computes anyway, so checking it is nearly free).

    ``stacked`` (fixed-step loops only): for MLPs whose hidden layers share one width, hold
    the activities as one ``(H, N, w)`` array and compute the gradients of all
    hidden-to-hidden layers with one batched matrix product each way (see
    :mod:`pclandscape._stacked`; same values up to rounding). ``None`` (the default) does so
    on GPUs, where a step is bound by kernel launches.

    ``unroll`` (fixed-step loops only) is passed to ``lax.fori_loop``: each loop iteration
    runs that many steps (``True``: all of them, a straight-line program XLA can schedule as
    a whole, at the price of a longer compilation). ``None`` (the default) unrolls fully on
    GPUs when ``steps <= 128`` and not at all elsewhere. Measured on an H100
    (``benchmarks/README.md``): unrolling took a hand-written 50-step PC step from 2.3 to
    1.8 ms and left this solver's step unchanged (1.8 ms either way, stacked).

    Args:
        dt: step size (per sample).
        steps: number of steps ``T`` (the maximum with ``stop_at_tol``).
        tol: residual below which the result is reported as converged.
        backtrack: reject energy-raising steps and halve that sample's ``dt``.
        stop_at_tol: stop early once every sample has converged.
        unroll: steps per loop iteration of the fixed-step loop (int, ``True`` for all, or
            ``None`` for the backend's default, see above).
        stacked: use the layer-stacked gradient for equal-width MLPs (``None``: on GPUs).
    """

    dt: float = 0.1
    steps: int = eqx.field(default=50, static=True)
    tol: float = 1e-4
    backtrack: bool = eqx.field(default=False, static=True)
    stop_at_tol: bool = eqx.field(default=False, static=True)
    unroll: int | bool | None = eqx.field(default=None, static=True)
    stacked: bool | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        positive_number("Euler", "dt", self.dt)
        positive_int("Euler", "steps", self.steps)
        positive_number("Euler", "tol", self.tol)
        valid = isinstance(self.unroll, bool) or (isinstance(self.unroll, int) and self.unroll >= 1)
        if self.unroll is not None and not valid:
            raise ValueError(f"Euler(unroll={self.unroll!r}) must be None, a bool or a positive integer.")

    @property
    def aims_at_tol(self) -> bool:
        """Only with ``stop_at_tol``: a fixed number of steps is a budget, not a target."""
        return self.stop_at_tol

    def _unroll(self):
        if self.unroll is not None:
            return self.unroll
        return jax.default_backend() == "gpu" and self.steps <= 128

    def solve(self, net, x, y, z0):
        z0 = tuple(z0)
        if self.backtrack:
            return self._backtracking(net, x, y, z0)
        if self.stop_at_tol:
            return self._until_tol(net, x, y, z0)
        return self._fixed(net, x, y, z0)

    def _fixed(self, net, x, y, z0):
        """``steps`` plain steps (layer-stacked where that applies)."""
        dt = self.dt
        use_stacked = jax.default_backend() == "gpu" if self.stacked is None else self.stacked
        stk = stacked_mlp(net, x, y) if use_stacked else None
        if stk is not None:
            zs = jax.lax.fori_loop(0, self.steps, lambda _, zs: zs - dt * stk.grad(zs), stk.stack(z0),
                                   unroll=self._unroll())
            return stk.unstack(zs), jnp.asarray(self.steps, jnp.int32)

        def body(_, z):
            return tuple(a - dt * b for a, b in zip(z, activity_grad(net, z, x, y)))

        return jax.lax.fori_loop(0, self.steps, body, z0, unroll=self._unroll()), jnp.asarray(self.steps, jnp.int32)

    def _until_tol(self, net, x, y, z0):
        """Gradient flow until every residual is ``<= tol`` (at most ``steps`` steps)."""
        dt = self.dt

        def cond(carry):
            k, _, g = carry
            return (k < self.steps) & (jnp.max(per_sample_norm(g)) > self.tol)

        def body(carry):
            k, z, g = carry
            z = tuple(a - dt * b for a, b in zip(z, g))
            return k + 1, z, activity_grad(net, z, x, y)

        k, z, _ = jax.lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), z0, activity_grad(net, z0, x, y)))
        return z, k

    def _backtracking(self, net, x, y, z0):
        """Steps that would raise a sample's energy are rejected and its ``dt`` halved; with
        ``stop_at_tol`` the loop also stops once every residual is ``<= tol``."""

        def body(_, carry):
            z, e, g, step = carry
            cand = tuple(a - per_row(step, a) * b for a, b in zip(z, g))
            e_new, g_new = energies_and_grads(net, cand, x, y)
            ok = e_new <= e
            pick = lambda new, old: jnp.where(per_row(ok, new), new, old)  # noqa: E731
            z = tuple(pick(c, a) for c, a in zip(cand, z))
            g = tuple(pick(c, a) for c, a in zip(g_new, g))
            return z, jnp.where(ok, e_new, e), g, jnp.where(ok, step, step / 2)

        e0, g0 = energies_and_grads(net, z0, x, y)
        init = (z0, e0, g0, jnp.full(e0.shape, self.dt, e0.dtype))
        if not self.stop_at_tol:
            z = jax.lax.fori_loop(0, self.steps, body, init, unroll=self._unroll())[0]
            return z, jnp.asarray(self.steps, jnp.int32)
        k, (z, _, _, _) = jax.lax.while_loop(
            lambda c: (c[0] < self.steps) & (jnp.max(per_sample_norm(c[1][2])) > self.tol),
            lambda c: (c[0] + 1, body(c[0], c[1])),
            (jnp.asarray(0, jnp.int32), init),
        )
        return z, k


class PaperEuler(AbstractSolver):
    """The inference loop of the paper's PyTorch notebooks (``PCN.infer_train``), exactly.

    Unlike :class:`Euler` (per-sample, fixed ``dt``), the notebooks control one step size for
    the whole batch. Starting from the feedforward activities, iteration ``t = 0, 1, ...``:

    1. computes the prediction errors at the current activities ``z_t`` and the batch's total
       energy ``E_t = sum_i sum_l ||e_{l,i}||^2``;
    2. takes the step ``z_{t+1} = z_t - dt * dF_i/dz_i`` (every sample, the current ``dt``);
    3. if ``t > 0``, ``E_t >= E_{t-1}`` and ``dt > min_dt``: halves ``dt`` (the step just taken
       is kept); if that brings ``dt`` to ``<= min_dt``, ``dt`` is reset to its value at the
       start of this call and the loop stops.

    It runs at most ``steps`` iterations. The weight gradient of the notebooks (``set_grads``)
    uses the errors computed at the start of the last iteration run, i.e. *before* its
    activity update: :meth:`solve` therefore returns the activities ``z_t`` of the start of
    the last iteration, and the step size in force after the call is the solver's state
    (:meth:`solve_with_state`), which :func:`pclandscape.train` carries into the next training
    step as the notebooks' ``PCN.dt`` attribute persisted (``History.inference_dt`` records
    it per step).

    The step is ``dt`` times the gradient of each sample's own energy, which is the gradient
    of the batch *sum* of energies the notebooks differentiate. The residual reported by
    :func:`infer` is at the returned activities.

    Args:
        dt: the initial step size (the notebooks' ``DT = 0.1``).
        steps: the maximum number of iterations (``N_ITERS = 50``).
        min_dt: the step size at or below which the loop stops (``0.025``).
        tol: residual below which :func:`infer` reports convergence.
    """

    dt: float = 0.1
    steps: int = eqx.field(default=50, static=True)
    min_dt: float = 0.025
    tol: float = 1e-4

    def __check_init__(self):
        positive_number("PaperEuler", "dt", self.dt)
        positive_number("PaperEuler", "min_dt", self.min_dt)
        positive_int("PaperEuler", "steps", self.steps)
        positive_number("PaperEuler", "tol", self.tol)

    @property
    def aims_at_tol(self) -> bool:
        """False: the notebooks' inference stops on its step-size rule, not on the residual."""
        return False

    def init_state(self) -> Array:
        return jnp.asarray(self.dt, jnp.result_type(float))

    def solve(self, net, x, y, z0):
        z, steps, _ = self.solve_with_state(net, x, y, z0, self.init_state())
        return z, steps

    def solve_with_state(self, net, x, y, z0, state):
        z0 = tuple(z0)
        dtype = z0[0].dtype if z0 else x.dtype
        dt_start = jnp.asarray(state, dtype)
        min_dt = jnp.asarray(self.min_dt, dtype)

        def body(carry):
            t, z, _, e_prev, dt, _ = carry
            e, g = energies_and_grads(net, z, x, y)
            total = jnp.sum(e)  # 1/2 of the notebooks' sum of squared errors: same comparisons
            z_next = tuple(a - dt * b for a, b in zip(z, g))
            rose = (t > 0) & (total >= e_prev) & (dt > min_dt)
            halved = jnp.where(rose, dt / 2, dt)
            stop = rose & (halved <= min_dt)
            return t + 1, z_next, z, total, jnp.where(stop, dt_start, halved), stop

        def cond(carry):
            return (carry[0] < self.steps) & ~carry[5]

        if not z0:
            return z0, jnp.asarray(0, jnp.int32), dt_start
        init = (jnp.asarray(0, jnp.int32), z0, z0, jnp.asarray(jnp.inf, dtype), dt_start, jnp.asarray(False))
        t, _, z_last_start, _, dt, _ = jax.lax.while_loop(cond, body, init)
        return z_last_start, t, dt

