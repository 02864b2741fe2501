"""PC inference: minimise the energy over the hidden activities (Eq 3).

All solvers share one small interface (:class:`AbstractSolver`) and are used through
:func:`infer`, which starts from the feedforward pass and returns an :class:`Equilibrium`
with its convergence diagnostics.

**Step sizes are per sample** (docs/conventions.md): sample ``i`` moves along ``-dF_i/dz_i`` where
``F_i = 1/2 sum_l ||z_{l,i} - f_l(z_{l-1,i})||^2`` is its own energy (``F = mean_i F_i``).
Since samples do not interact, this is the gradient of ``sum_i F_i``; differentiating the
batch *mean* instead would shrink every step by ``1/N``. The result for one sample therefore
does not depend on the batch it is in (the adaptive :class:`Heun` solver even picks its step
sizes per sample).

The residual reported everywhere is ``grad_norm = max_i ||dF_i/dz_i||_2`` (the norm over all
hidden layers of one sample, worst sample of the batch): a batch-size independent measure of
the distance to the equilibrium ``dF/dz = 0``. For ReLU MLPs, whose equilibria sit on the
kinks of the activation where the gradient jumps, ``dF_i/dz_i`` is the min-norm subgradient
(:func:`pclandscape.kinks.stationarity_residual`; the gradient wherever ``F_i`` is smooth).

**Float32 on GPUs.** JAX computes float32 matrix products on recent NVIDIA GPUs in TF32 by
default, whose rounding (about 1e-3 relative) puts a floor under the residual: on an H100 a
784-500-500-10 tanh net stalled at ``grad_norm ~ 1e-2`` with every solver, and reached 1e-5
(Newton: 8 iterations) only under ``jax.default_matmul_precision("highest")``. Run inference
that must be verified to a float32 tolerance under that setting (or in float64); fixed-step
training (the paper's T = 50 Euler steps) does not need it.
"""

from __future__ import annotations

import abc
import warnings

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import optimistix as optx
import numpy as np
from jaxtyping import Array, Float

from ._linalg import map_unbatched, per_row, per_sample_cg, per_sample_dot
from ._stacked import stacked_mlp
from ._checks import nonnegative_int, nonnegative_number, positive_int, positive_number
from ._divergence import divergence_message, diverging
from .errors import DivergenceError
from ._subgradients import descent_pieces, one_sided_derivatives
from .kinks import kink_slopes, stationarity_residual
from .networks import MLP, PCNetwork, has_block_closed_form
from ._energies import per_sample_energies
from .objectives import check_activities, pc_energy

__all__ = [
    "AbstractSolver",
    "Euler",
    "PaperEuler",
    "Heun",
    "ExactLinear",
    "Newton",
    "Equilibrium",
    "infer",
    "equilibrated_energy",
    "activity_grad",
    "default_solver",
]


def activity_grad(net: PCNetwork, activities, x: Array, y: Array) -> tuple[Array, ...]:
    """Per-sample activity gradients ``dF_i/dz_{l,i}`` for every hidden layer ``l``.

    Same shapes as ``activities``. This is ``N`` times the gradient of the batch-mean
    energy of Eq 2.
    """
    return jax.grad(lambda z: jnp.sum(per_sample_energies(net, z, x, y)))(tuple(activities))


def _per_sample_norm(grads) -> Array:
    """``(N,)`` norms ``||dF_i/dz_i||`` over all hidden layers of each sample."""
    return jnp.sqrt(per_sample_dot(grads, grads))


def _energies_and_grads(net, z, x, y):
    """Per-sample energies ``F_i`` ``(N,)`` and activity gradients ``dF_i/dz_i`` in one pass."""
    e, vjp = jax.vjp(lambda zz: per_sample_energies(net, zz, x, y), z)
    return e, vjp(jnp.ones_like(e))[0]


class AbstractSolver(eqx.Module):
    """Interface of an inference solver.

    A solver implements ``solve(net, x, y, z0) -> (activities, steps)``; ``tol`` is the
    residual ``max_i ||dF_i/dz_i||`` below which :func:`infer` reports convergence.
    """

    tol: eqx.AbstractVar[float]

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

    def _unroll(self):
        if self.unroll is not None:
            return self.unroll
        return jax.default_backend() == "gpu" and self.steps <= 128

    def solve(self, net, x, y, z0):
        dt = self.dt
        if not self.backtrack and not self.stop_at_tol:

            use_stacked = jax.default_backend() == "gpu" if self.stacked is None else self.stacked
            stk = stacked_mlp(net, x, y) if use_stacked else None
            if stk is not None:
                zs = jax.lax.fori_loop(0, self.steps, lambda _, zs: zs - dt * stk.grad(zs), stk.stack(z0),
                                       unroll=self._unroll())
                return stk.unstack(zs), jnp.asarray(self.steps, jnp.int32)

            def body(_, z):
                g = activity_grad(net, z, x, y)
                return jax.tree_util.tree_map(lambda a, b: a - dt * b, z, g)

            z = jax.lax.fori_loop(0, self.steps, body, tuple(z0), unroll=self._unroll())
            return z, jnp.asarray(self.steps, jnp.int32)
        if not self.backtrack:  # gradient flow until every residual is <= tol

            def cond(carry):
                k, _, g = carry
                return (k < self.steps) & (jnp.max(_per_sample_norm(g)) > self.tol)

            def body_tol(carry):
                k, z, g = carry
                z = tuple(a - dt * b for a, b in zip(z, g))
                return k + 1, z, activity_grad(net, z, x, y)

            z0 = tuple(z0)
            k, z, _ = jax.lax.while_loop(cond, body_tol, (jnp.asarray(0, jnp.int32), z0, activity_grad(net, z0, x, y)))
            return z, k

        def energy_and_grad(z):
            return _energies_and_grads(net, z, x, y)

        def body_bt(_, carry):
            z, e, g, step = carry
            cand = tuple(a - per_row(step, a) * b for a, b in zip(z, g))
            e_new, g_new = energy_and_grad(cand)
            ok = e_new <= e
            pick = lambda new, old: jnp.where(per_row(ok, new), new, old)
            z = tuple(pick(c, a) for c, a in zip(cand, z))
            g = tuple(pick(c, a) for c, a in zip(g_new, g))
            return z, jnp.where(ok, e_new, e), g, jnp.where(ok, step, step / 2)

        z0 = tuple(z0)
        e0, g0 = energy_and_grad(z0)
        step0 = jnp.full(e0.shape, dt, e0.dtype)
        if not self.stop_at_tol:
            z, _, _, _ = jax.lax.fori_loop(0, self.steps, body_bt, (z0, e0, g0, step0), unroll=self._unroll())
            return z, jnp.asarray(self.steps, jnp.int32)
        k, (z, _, _, _) = jax.lax.while_loop(
            lambda c: (c[0] < self.steps) & (jnp.max(_per_sample_norm(c[1][2])) > self.tol),
            lambda c: (c[0] + 1, body_bt(c[0], c[1])),
            (jnp.asarray(0, jnp.int32), (z0, e0, g0, step0)),
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
            e, g = _energies_and_grads(net, z, x, y)
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


class Heun(AbstractSolver):
    """Heun's method (2nd-order Runge-Kutta) with PID step-size control, via diffrax.

    Integrates ``dz/dt = -dF_i/dz`` from ``t = 0`` up to ``t1`` for each sample with its own
    adaptive step sizes (the solve is vmapped over samples), and **stops as soon as the
    sample's residual ``||dF_i/dz_i||`` falls below** ``tol`` -- a steady state measured on
    the gradient, not on the size of the activities.

    An explicit adaptive solver on a stiff gradient flow settles into a limit cycle at the
    edge of stability in which the residual stays at roughly 10-100 times ``atol`` (measured
    here: ``rtol = atol = 1e-3`` leaves ``||dF/dz|| ~ 1e-2`` after 4000 steps, so F* is off
    by ~1e-5 relative). The step-size tolerances must therefore be well below the stopping
    residual ``tol``: the defaults pair ``tol = 1e-4`` with ``rtol = atol = 1e-6``.

    Args:
        t1: maximum integration time (the paper's ``T = 300`` for Fig 1).
        rtol, atol: tolerances of the PID step-size controller (the paper used ``1e-3``).
        tol: stopping residual ``||dF_i/dz_i||``; also the convergence threshold.
        dt0: initial step size.
        max_steps: maximum number of accepted + rejected steps per sample.
        pcoeff, icoeff, dcoeff: PID coefficients (see ``diffrax.PIDController``).
        error_norm: norm of the local error estimate, ``"rms"`` (diffrax's default) or
            ``"max"`` (every activity within ``atol + rtol |z|``: stricter by up to ``sqrt(m)``
            for ``m`` activities per sample, so smaller steps -- it lowers the plateau of the
            residual at loose tolerances, but slows convergence at tight ones).
    """

    t1: float = 300.0
    rtol: float = 1e-6
    atol: float = 1e-6
    tol: float = 1e-4
    dt0: float = 0.1
    max_steps: int = eqx.field(default=4096, static=True)
    pcoeff: float = 0.3
    icoeff: float = 0.4
    dcoeff: float = 0.0
    error_norm: str = eqx.field(default="rms", static=True)

    def __check_init__(self):
        for name in ("t1", "rtol", "atol", "tol", "dt0"):
            positive_number("Heun", name, getattr(self, name))
        for name in ("pcoeff", "icoeff", "dcoeff"):
            nonnegative_number("Heun", name, getattr(self, name))
        positive_int("Heun", "max_steps", self.max_steps)
        if self.error_norm not in ("rms", "max"):
            raise ValueError(f"Heun(error_norm={self.error_norm!r}): use 'rms' or 'max'.")

    def solve(self, net, x, y, z0):
        tol = self.tol

        def one_sample(z0_i, x_i, y_i):
            xb, yb = x_i[None], y_i[None]

            def grad(z):
                return activity_grad(net, tuple(a[None] for a in z), xb, yb)

            def vf(t, z, args):
                return tuple(-g[0] for g in grad(z))

            def stop(t, z, args, **kwargs):
                return _per_sample_norm(grad(z))[0] <= tol

            sol = diffrax.diffeqsolve(
                diffrax.ODETerm(vf),
                diffrax.Heun(),
                t0=0.0,
                t1=self.t1,
                dt0=self.dt0,
                y0=z0_i,
                stepsize_controller=diffrax.PIDController(
                    rtol=self.rtol,
                    atol=self.atol,
                    pcoeff=self.pcoeff,
                    icoeff=self.icoeff,
                    dcoeff=self.dcoeff,
                    norm=optx.max_norm if self.error_norm == "max" else optx.rms_norm,
                ),
                event=diffrax.Event(stop),
                max_steps=self.max_steps,
                throw=False,
                saveat=diffrax.SaveAt(t1=True),
            )
            z = tuple(a[-1] for a in sol.ys)
            return z, sol.stats["num_steps"]

        z, steps = jax.vmap(one_sample)(tuple(z0), x, y)
        return z, jnp.max(steps).astype(jnp.int32)


class ExactLinear(AbstractSolver):
    """Exact equilibrium of a deep linear PCN by a direct block-tridiagonal solve.

    For a linear MLP (``f = id``, optional biases) the stationarity conditions
    ``dF_i/dz_l = 0`` of every sample are the linear system, for ``l = 1..H``::

        (I + p_{l+1} M_{l+1}^T M_{l+1}) z_l - M_l z_{l-1} - p_{l+1} M_{l+1}^T z_{l+1}
            = c_l - p_{l+1} M_{l+1}^T c_{l+1}        (z_0 = x, z_L = y)

    with ``M_l``, ``c_l`` the layer's linear map and offset (``MLP.linear_maps``: ``W_l``,
    ``b_l`` in the standard parameterisation; ``a_l W_l (+ I)`` for scaled and residual MLPs)
    and ``p_{l+1}`` the output precision for ``l = H``, else 1.

    whose matrix is symmetric positive definite and block tridiagonal across layers, and
    the same for every sample. It is solved by block Cholesky (Thomas) elimination: the
    Schur complements ``S_l = D_l - W_l S_{l-1}^{-1} W_l^T`` are factorised once
    (``O(L n^3)``) and shared by the whole batch (``O(L n^2 N)``). No iteration.

    Unobserved (NaN) targets free their output units, which changes the last block per
    sample; ``masked=True`` handles that (one extra ``n_H x n_H`` factorisation per sample).
    :func:`infer`, :func:`pclandscape.pc_step` and :func:`pclandscape.train` switch it on
    when the targets contain NaN; under your own ``jit`` pass ``masked=True`` yourself.

    Args:
        tol: residual below which the result is reported as converged (a warning sign of
            ill-conditioning if the exact solve misses it).
        masked: targets may contain NaN (missing) entries.
    """

    tol: float = 1e-4
    masked: bool = eqx.field(default=False, static=True)

    def __check_init__(self):
        positive_number("ExactLinear", "tol", self.tol)

    def prepare(self, net, y):
        type(self).check(self, net)
        if not self.masked and not isinstance(y, jax.core.Tracer) and bool(np.isnan(np.asarray(y)).any()):
            return ExactLinear(tol=self.tol, masked=True)
        return self

    def check(self, net):
        if not (isinstance(net, MLP) and net.is_linear):
            name = getattr(net, "activation_name", type(net).__name__)
            raise ValueError(
                f"solver=ExactLinear() needs a linear MLP (activation='linear'), but this "
                f"{type(net).__name__} has activation {name!r}; use solver=pcl.Newton() (or "
                f"pcl.Heun(), pcl.Euler()) for nonlinear networks."
            )

    def solve(self, net, x, y, z0):
        ws, bs = net.linear_maps()  # M_l = a_l W_l (+ I on skip layers), offsets a_l b_l
        p = net.output_precision
        n_hidden = len(ws) - 1
        if n_hidden == 0:
            return (), jnp.asarray(0, jnp.int32)
        dtype = jnp.result_type(x, ws[0])
        observed = ~jnp.isnan(y)
        y = jnp.where(observed, y, 0.0)
        rhs = []
        for l in range(1, n_hidden + 1):  # hidden layer l uses M_l (in) and M_{l+1} (out)
            r = jnp.zeros((x.shape[0], ws[l - 1].shape[0]), dtype)
            out_weight = p if l == n_hidden else 1.0  # the output term carries the precision
            if l == 1:
                r = r + x @ ws[0].T
            if l == n_hidden:
                r = r + p * (y @ ws[-1])
                if bs is not None and self.masked:  # the output bias acts on observed units only
                    r = r + p * (bs[-1] @ ws[-1] - (observed * bs[-1]) @ ws[-1])
            if bs is not None:
                r = r + bs[l - 1] - out_weight * (bs[l] @ ws[l])
            rhs.append(r)
        chols, cs = [], []
        for l in range(1, n_hidden + 1):
            w_out = ws[l]
            last = l == n_hidden
            if last and self.masked:  # per sample: I + p M_L^T O_i M_L
                gram = p * jnp.einsum("no,oi,oj->nij", observed.astype(dtype), w_out, w_out)
            else:
                gram = (p if last else 1.0) * (w_out.T @ w_out)
            d = jnp.eye(w_out.shape[1], dtype=dtype) + gram
            c = rhs[l - 1]
            if l > 1:
                w_in = ws[l - 1]
                prev = chols[-1]
                d = d - w_in @ jsl.cho_solve(prev, w_in.T)
                c = c + jsl.cho_solve(prev, cs[-1].T).T @ w_in.T
            if last and self.masked:  # per sample, unbatched (see pclandscape._linalg)
                chols.append(map_unbatched(lambda m: jsl.cho_factor(m, lower=True)[0], d))
            else:
                chols.append(jsl.cho_factor(d, lower=True))
            cs.append(c)
        zs = [None] * n_hidden
        if self.masked:
            zs[-1] = map_unbatched(lambda lc: jsl.cho_solve((lc[0], True), lc[1]), (chols[-1], cs[-1]))
        else:
            zs[-1] = jsl.cho_solve(chols[-1], cs[-1].T).T
        for l in range(n_hidden - 1, 0, -1):  # hidden index l-1 (0-based), layer l
            zs[l - 1] = jsl.cho_solve(chols[l - 1], (cs[l - 1] + zs[l] @ ws[l]).T).T
        return tuple(zs), jnp.asarray(1, jnp.int32)


class Newton(AbstractSolver):
    """Damped Newton on the activities of each sample.

    Each iteration solves the Newton system of every sample's activity Hessian
    ``d^2 F_i / dz_i^2`` (by conjugate gradients on Hessian-vector products, the default, or
    by block elimination of its closed-form block-tridiagonal matrix, see *Linear solves*) and
    steps along ``d_i = -(d^2 F_i/dz_i^2)^{-1} dF_i/dz_i`` with a per-sample Armijo backtracking line
    search (``F_i(z + a d) <= F_i(z) + c a <dF_i/dz, d>``, ``a = 1, 1/2, 1/4, ...``; once the
    decrease is below the floating-point resolution of ``F_i``, a step is accepted when it
    lowers the residual ``||dF_i/dz_i||`` instead).

    **Safeguards.** Away from the equilibrium of a nonlinear net the Hessian may be
    indefinite (the ``f''`` term); where the Newton direction is not a descent direction (or
    not finite), or the sample's previous line search failed, that sample falls back to the
    gradient direction ``-dt dF_i/dz_i`` with the same line search, so the energy of every
    sample never rises. Near an equilibrium with a
    positive-definite Hessian the iteration converges quadratically, so the number of
    iterations to ``tol`` does not grow with depth (each iteration costs more with depth and
    width). Samples whose residual ``||dF_i/dz_i||`` is already ``<= tol`` are frozen; the loop
    stops when every sample has converged or after ``max_steps`` iterations, and
    :func:`infer` reports the residual either way.

    For linear nets one exact Newton step from any point lands on the equilibrium
    (``ExactLinear`` does the same solve with the factorisation shared by the batch).

    **ReLU MLPs** (piecewise-quadratic energy, :mod:`pclandscape.kinks`) get an active-set
    iteration instead: exact Newton steps within one quadratic piece, activities stopped at
    the kink they would cross, held there while the energy is V-shaped along them and
    released to the side that descends otherwise. It ends on a local minimum of every
    ``F_i`` whose min-norm subgradient is ``<= tol`` -- typically with many activities
    exactly at 0, where gradient flow only chatters and never meets the tolerance.

    **Linear solves.** ``linear_solve="block"`` factorises each sample's Hessian exactly
    (``O(H n^3)`` per sample and iteration: cheap for narrow nets, dominant for wide ones);
    ``"cg"`` is a truncated (Hessian-free) Newton method: per-sample conjugate gradients on
    Hessian-vector products (each costs about two Euler steps), to the relative residual
    ``min(0.5, sqrt(||dF_i/dz_i||))`` (superlinear convergence), at most ``cg_max_steps``
    products, stopping at negative curvature. CG needs ``~sqrt(kappa)`` products where gradient
    flow needs ``~kappa`` steps (``kappa`` the condition number of the activity Hessian), and
    works for any network (the CNN too).

    Args:
        tol: stopping residual ``max_i ||dF_i/dz_i||``.
        max_steps: maximum Newton iterations.
        linear_solve: ``"cg"`` (the default: fastest in ``benchmarks/inference.py`` for every
            nonlinear net measured) or ``"block"`` (MLPs).
        cg_max_steps: Hessian-vector products per CG solve (``"cg"`` only).
        max_backtracks: line-search halvings per iteration.
        fallback_dt: step of the gradient fallback before backtracking.
    """

    tol: float = 1e-5
    max_steps: int = eqx.field(default=30, static=True)
    linear_solve: str = eqx.field(default="cg", static=True)
    cg_max_steps: int = eqx.field(default=100, static=True)
    max_backtracks: int = eqx.field(default=12, static=True)
    fallback_dt: float = 1.0

    def __check_init__(self):
        positive_number("Newton", "tol", self.tol)
        positive_number("Newton", "fallback_dt", self.fallback_dt)
        positive_int("Newton", "max_steps", self.max_steps)
        positive_int("Newton", "cg_max_steps", self.cg_max_steps)
        nonnegative_int("Newton", "max_backtracks", self.max_backtracks)
        if self.linear_solve not in ("block", "cg"):
            raise ValueError(f"Newton(linear_solve={self.linear_solve!r}): use 'block' or 'cg'.")

    def check(self, net):
        if self.linear_solve == "block" and not has_block_closed_form(net):
            raise ValueError(
                f"Newton(linear_solve='block') needs an MLP (its activity Hessian is built in closed "
                f"form), not a {type(net).__name__}; use Newton(linear_solve='cg'), pcl.Heun() or pcl.Euler()."
            )

    def solve(self, net, x, y, z0):
        z0 = tuple(z0)
        if not z0:
            return z0, jnp.asarray(0, jnp.int32)
        slopes = kink_slopes(net)
        pieces = self._smooth(net, x, y) if slopes is None else self._kinked(net, x, y, slopes)
        return self._iterate(*pieces, z0)

    def _newton_direction(self, hvp, rhs, gnorm):
        """Truncated CG on ``hvp`` to the relative residual ``min(0.5, sqrt(||g_i||))``."""
        return per_sample_cg(hvp, rhs, jnp.minimum(0.5, jnp.sqrt(gnorm)), self.cg_max_steps)

    def _smooth(self, net, x, y):
        """``(evaluate, direction, project)`` for a smooth energy: the gradient, the Newton
        direction of the activity Hessian, and the plain step ``z + a d``."""
        from .activity_hessian import factor_activity_hessian, mlp_activity_hvp

        def evaluate(z):
            e, g = _energies_and_grads(net, z, x, y)
            return e, None, g, _per_sample_norm(g)

        def direction(z, _, g, gnorm):
            rhs = tuple(-a for a in g)
            if self.linear_solve == "block":
                return factor_activity_hessian(net, z, x, y).solve(rhs)
            if has_block_closed_form(net):  # closed form: two matrix products per layer
                hvp = mlp_activity_hvp(net, z, x, y)
            else:
                hvp = lambda t: jax.jvp(lambda zz: activity_grad(net, zz, x, y), (z,), (t,))[1]  # noqa: E731
            return self._newton_direction(hvp, rhs, gnorm)

        def project(z, d, alpha, _):
            return tuple(a + per_row(alpha, a) * b for a, b in zip(z, d))

        return evaluate, direction, project

    def _kinked(self, net, x, y, slopes):
        """``(evaluate, direction, project)`` of the active-set iteration for a piecewise-
        quadratic energy (ReLU MLPs, :mod:`pclandscape.kinks`).

        Per activity, the quadratic piece a step lives in: the sign of ``z`` off the kink; on
        the kink (``z = 0`` exactly) the side whose one-sided derivative descends, or none
        (held at 0) where the energy is V-shaped there (``D^- <= 0 <= D^+``). The direction is
        the Newton step on that face of the piece (exact: ``F_i`` is quadratic there, with
        ``f'' = 0``), and a step is projected back onto the piece -- an activity that would
        cross 0 stops at 0. The residual is the gradient on the chosen pieces, which bounds
        the min-norm subgradient (:func:`pclandscape.kinks.stationarity_residual`) from above
        and is not zero on a Lambda-shaped kink, so the iteration does not stop there.
        """
        from .activity_hessian import factor_activity_hessian, mlp_activity_hvp

        left, right = slopes

        def evaluate(z):
            dm, dp, e = one_sided_derivatives(net, z, x, y, slopes)
            side, held, geff = descent_pieces(z, dm, dp)
            return e, (side, held), geff, _per_sample_norm(geff)

        def direction(z, aux, g, gnorm):
            side, held = aux
            rhs = tuple(-a for a in g)
            fp = [jnp.where(r, right, left).astype(x.dtype) for r in side]
            if self.linear_solve == "block":
                return factor_activity_hessian(net, z, x, y, slopes=fp, fixed=held).solve(rhs)
            return self._newton_direction(mlp_activity_hvp(net, z, x, y, slopes=fp, fixed=held), rhs, gnorm)

        def project(z, d, alpha, aux):
            out = []
            for a, dd, r in zip(z, d, aux[0]):
                t = a + per_row(alpha, a) * dd
                out.append(jnp.where(jnp.where(r, t < 0, t > 0), 0.0, t))
            return tuple(out)

        return evaluate, direction, project

    def _iterate(self, evaluate, direction, project, z0):
        """The damped Newton loop shared by both energies.

        ``evaluate(z) -> (F_i, aux, g, ||g_i||)`` (``g`` the gradient to descend, ``aux`` what
        ``direction`` and ``project`` need), ``direction(z, aux, g, ||g_i||)`` the Newton
        direction, ``project(z, d, alpha, aux)`` the point reached by steps ``alpha`` (per
        sample) along ``d``. Per-sample Armijo backtracking; the gradient direction where
        Newton's is not a descent direction, or after a failed line search.
        """
        tol, armijo, dot = self.tol, 1e-4, per_sample_dot

        def body(carry):
            z, e, aux, g, gnorm, stalled, it = carry
            active = gnorm > tol
            newton = direction(z, aux, g, gnorm)
            slope_n = dot(g, newton)
            use_newton = jnp.isfinite(slope_n) & (slope_n < 0) & ~stalled
            d = tuple(
                jnp.where(per_row(use_newton, a), jnp.where(jnp.isfinite(a), a, 0.0), -self.fallback_dt * b)
                for a, b in zip(newton, g)
            )
            slope = dot(g, d)

            def ls_cond(state):
                k, _, ok = state
                return (k < self.max_backtracks) & ~jnp.all(ok | ~active)

            def ls_body(state):
                k, alpha, ok = state
                e_try, _, _, gnorm_try = evaluate(project(z, d, alpha, aux))
                # Armijo; or, once the decrease is below the precision of F_i, a smaller residual
                flat = jnp.abs(e_try - e) <= 64 * jnp.finfo(e.dtype).eps * jnp.maximum(jnp.abs(e), 1.0)
                good = (e_try <= e + armijo * alpha * slope) | (flat & (gnorm_try < gnorm))
                ok_new = ok | good
                return k + 1, jnp.where(ok_new, alpha, alpha / 2), ok_new

            _, alpha, ok = jax.lax.while_loop(ls_cond, ls_body, (0, jnp.ones_like(e), ~active))
            z = project(z, d, jnp.where(active & ok, alpha, 0.0), aux)
            return (z, *evaluate(z), active & ~ok, it + 1)

        def cond(carry):
            return (carry[-1] < self.max_steps) & jnp.any(carry[4] > tol)

        e0, aux0, g0, gnorm0 = evaluate(z0)
        init = (z0, e0, aux0, g0, gnorm0, jnp.zeros(e0.shape, bool), jnp.asarray(0, jnp.int32))
        z, *_, it = jax.lax.while_loop(cond, body, init)
        return z, it


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
    residual ``<= 1e-5``; in ``benchmarks/inference.py`` 5-40x faster to that residual than
    gradient flow or Heun, and the only solver here that reaches the kink equilibria of ReLU
    nets, see :mod:`pclandscape.kinks`).
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
    gnorm = jnp.max(_per_sample_norm(g)) if len(g) else jnp.zeros((), x.dtype)
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
        An :class:`Equilibrium` (activities, energy, grad_norm, steps, converged).

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
        warnings.warn(
            f"inference did not converge: residual ||dF/dz|| = {float(eq.grad_norm):.3g} > "
            f"tol = {eq.tol:g}, so this is not F* at an equilibrium; use more steps, "
            f"pcl.Newton() (nonlinear nets) or pcl.ExactLinear() (linear nets).",
            RuntimeWarning,
            stacklevel=2,
        )
    return eq.energy
