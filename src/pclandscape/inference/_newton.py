"""Damped Newton on the activities (truncated CG or block elimination), with the active-set
iteration for ReLU MLPs."""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp

from .._checks import nonnegative_int, positive_int, positive_number
from .._energies import activity_grad, energies_and_grads, per_sample_norm
from .._linalg import per_row, per_sample_cg, per_sample_dot
from .._subgradients import descent_pieces, one_sided_derivatives
from ..kinks import kink_slopes
from ..networks import has_block_closed_form
from ._base import AbstractSolver

__all__ = ["Newton", "CG", "BlockTridiagonal"]


_ARMIJO = 1e-4


def _difference(_z, e):
    """The energies themselves: ``(F_i(z_new), F_i(z), max(|F_i(z)|, 1))`` (see :func:`_accept`)."""
    scale = jnp.maximum(jnp.abs(e), 1.0)
    return lambda _z_new, e_new: (e_new, e, scale)


def _accept(value, reference, scale, gnorm_new, gnorm, decrease):
    """The line search's test of a trial point, whose energy change is ``value - reference``
    (:func:`_difference`: the two energies; the ReLU iteration: the change computed from
    differences, and 0): Armijo, ``value <= reference + c * decrease`` (``decrease =
    alpha <dF_i/dz, d>``); or, where the change is below its floating-point resolution (64
    ulps of ``scale``), a smaller residual ``||dF_i/dz_i||``."""
    flat = jnp.abs(value - reference) <= 64 * jnp.finfo(scale.dtype).eps * scale
    return (value <= reference + _ARMIJO * decrease) | (flat & (gnorm_new < gnorm))


class CG(eqx.Module):
    """Newton's linear solve by truncated conjugate gradients on Hessian-vector products
    (Hessian-free; any network), at most ``max_steps`` products per solve.

    With ``precondition=True`` (the default) the solve is preconditioned by the inverse of
    ``K^T K``, the hidden-error part of the activity Hessian ``H = K^T K + p G^T G - C``
    (``K = de/dz``; :func:`pclandscape.activity_hessian.error_preconditioner`): Newton's
    system in the error coordinates of :class:`EPC`. There ``H`` becomes the identity plus a
    term of rank ``<= d_y`` (the output errors) plus the ``f''`` curvature term, so the number
    of products no longer grows with the depth or the conditioning of ``H`` (a linear net
    needs at most ``d_y + 1``). Each product then costs about twice as much (a backward and a
    forward substitution through the layers); ``benchmarks/depth.py`` and
    ``benchmarks/inference.py`` measure it 1.3-2.7x faster on the paper's MLPs and 20-30x
    at 128 layers.
    """

    max_steps: int = eqx.field(default=100, static=True)
    precondition: bool = eqx.field(default=True, static=True)

    def __check_init__(self):
        positive_int("CG", "max_steps", self.max_steps)


class BlockTridiagonal(eqx.Module):
    """Newton's linear solve by exact block elimination of the closed-form block-tridiagonal
    activity Hessian of an MLP (``O(H n^3)`` per sample and iteration)."""


_DEFAULT_CG = CG()
_SHORTHANDS = {"cg": _DEFAULT_CG, "block": BlockTridiagonal()}


def _linear_solve(value, cg_max_steps):
    """``linear_solve`` as an object; ``"cg"`` / ``"block"`` are shorthands for ``CG()`` / ``BlockTridiagonal()``."""
    if isinstance(value, str):
        if value not in _SHORTHANDS:
            raise ValueError(f"Newton(linear_solve={value!r}): use pcl.CG(max_steps=...) or pcl.BlockTridiagonal() "
                             f"(or the shorthands 'cg', 'block').")
        value = _SHORTHANDS[value]
    if not isinstance(value, (CG, BlockTridiagonal)):
        raise ValueError(f"Newton(linear_solve={value!r}): use pcl.CG(max_steps=...) or pcl.BlockTridiagonal().")
    if cg_max_steps is not None:
        warnings.warn("Newton(cg_max_steps=n) is deprecated: pass linear_solve=pcl.CG(max_steps=n).",
                      DeprecationWarning, stacklevel=4)
        cg = CG(max_steps=cg_max_steps)  # validated there
        if isinstance(value, CG):
            value = cg
    return value


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

    **Rounding floor.** A sample whose Newton step is within ``xtol`` rounding units of its
    activities (``||d_i|| <= xtol * eps * ||z_i||``, ``eps`` the machine epsilon of their dtype)
    and did not halve its residual, which is still above ``tol``, is stopped too: its
    equilibrium cannot be located more precisely in this precision, and further iterations
    only move it by rounding noise. Near an equilibrium that the precision can reach, a
    Newton step that small lowers the residual by orders of magnitude (quadratic
    convergence), so this ends only samples at the floor. They are reported as not converged
    (their residual is above ``tol``). Without the rule, deep standard-parameterised (SP)
    residual nets in float32 used all of ``max_steps`` there: at 32 layers of width 64 every
    sample sat at a residual of 1.4-1.6e-5 from iteration ~110 to the cap of 300, where the
    float32 residual of their float64 equilibrium rounded to float32 is 1.36e-5 (median) to
    1.48e-5 (largest; ``benchmarks/residual_floor.py --residual --param sp`` prints it).
    ``xtol=0`` turns the rule off.

    For linear nets one exact Newton step from any point lands on the equilibrium
    (``ExactLinear`` does the same solve with the factorisation shared by the batch).

    **ReLU MLPs** (piecewise-quadratic energy, :mod:`pclandscape.kinks`) get an active-set
    iteration instead: exact Newton steps within one quadratic piece, activities stopped at
    the kink they would cross, held there while the energy is V-shaped along them and
    released to the side that descends otherwise. An activity on a kink whose Newton step
    would take it back across (a *binding* one, as in projected Newton methods) is held too,
    and the step is solved again on the smaller face, so that the projected step stays a
    descent direction (without this, float32 solves of deep residual ReLU nets stalled near
    a residual of 3e-3). Its line search measures energy changes from differences of the errors
    (:func:`pclandscape.activity_hessian.mlp_energy_change`), exact below the resolution of
    ``F_i`` (subtracting two energies let a 128-layer net in float32 cycle among points
    within one ulp of each other). It ends on a local minimum of every
    ``F_i`` whose min-norm subgradient is ``<= tol`` -- typically with many activities
    exactly at 0, where gradient flow only chatters and never meets the tolerance.

    **Linear solves.** ``linear_solve=pcl.BlockTridiagonal()`` factorises each sample's Hessian exactly
    (``O(H n^3)`` per sample and iteration: cheap for narrow nets, dominant for wide ones);
    ``pcl.CG(max_steps)`` is a truncated (Hessian-free) Newton method: per-sample conjugate gradients on
    Hessian-vector products (each costs about two Euler steps), to the relative residual
    ``min(0.5, sqrt(||dF_i/dz_i||))`` (superlinear convergence), at most ``max_steps``
    products, stopping at negative curvature; it works for any network (the CNN too).
    Unpreconditioned, CG needs ``~sqrt(kappa)`` products where gradient flow needs ``~kappa``
    steps (``kappa`` the condition number of the activity Hessian, which grows with depth);
    preconditioned in the error coordinates (``CG(precondition=True)``, the default) about
    ``d_y + 1`` near an equilibrium, at any depth.

    Args:
        tol: stopping residual ``max_i ||dF_i/dz_i||``.
        max_steps: maximum Newton iterations.
        linear_solve: :class:`CG` (the default, ``CG(max_steps=100)``: fastest in
            ``benchmarks/inference.py`` for every nonlinear net measured) or
            :class:`BlockTridiagonal` (MLPs); ``"cg"`` and ``"block"`` are shorthands.
        max_backtracks: line-search halvings per iteration.
        fallback_dt: step of the gradient fallback before backtracking.
        xtol: the rounding-floor stop (see *Rounding floor*), in units of the machine epsilon
            of the activities' dtype; 0 turns it off.
        cg_max_steps: deprecated; use ``linear_solve=pcl.CG(max_steps=...)``.
    """

    tol: float = 1e-5  # the defaults (also those of __init__) keep the repr short: Newton()
    max_steps: int = eqx.field(default=30, static=True)
    linear_solve: CG | BlockTridiagonal = eqx.field(default=_DEFAULT_CG, static=True)
    max_backtracks: int = eqx.field(default=12, static=True)
    fallback_dt: float = 1.0
    xtol: float = eqx.field(default=8.0, static=True)

    def __init__(self, tol: float = 1e-5, max_steps: int = 30, linear_solve: CG | BlockTridiagonal | str = _DEFAULT_CG,
                 max_backtracks: int = 12, fallback_dt: float = 1.0, *, xtol: float = 8.0,
                 cg_max_steps: int | None = None):
        self.tol = tol
        self.max_steps = max_steps
        self.linear_solve = _linear_solve(linear_solve, cg_max_steps)
        self.max_backtracks = max_backtracks
        self.fallback_dt = fallback_dt
        self.xtol = xtol

    def __check_init__(self):
        positive_number("Newton", "tol", self.tol)
        positive_number("Newton", "fallback_dt", self.fallback_dt)
        positive_int("Newton", "max_steps", self.max_steps)
        nonnegative_int("Newton", "max_backtracks", self.max_backtracks)
        if isinstance(self.xtol, bool) or not isinstance(self.xtol, (int, float)) or not self.xtol >= 0:
            raise ValueError(f"Newton(xtol={self.xtol!r}) must be a number >= 0 (units of the machine epsilon; 0: off).")

    @property
    def _block(self) -> bool:
        return isinstance(self.linear_solve, BlockTridiagonal)

    def advice(self, steps: int) -> str:
        """Ended before ``max_steps``: at the rounding floor (see *Rounding floor*); else at the cap."""
        if steps < self.max_steps:
            return (f"pcl.Newton stopped after {steps} of its max_steps = {self.max_steps} iterations at the "
                    f"rounding floor of this precision (its Newton steps were within rounding of the activities): "
                    f"no point of this dtype meets tol. Infer in float64 (jax.enable_x64; pcl.verify_equilibrium "
                    f"checks a float32 point in float64) or use a tol above the residual.")
        return (f"pcl.Newton used all of its max_steps = {self.max_steps} iterations: raise max_steps "
                f"(or a larger tol).")

    def check(self, net):
        if self._block and not has_block_closed_form(net):
            raise ValueError(
                f"Newton(linear_solve=BlockTridiagonal()) needs an MLP (its activity Hessian is built in closed "
                f"form), not a {type(net).__name__}; use Newton(linear_solve=pcl.CG()), pcl.Heun() or pcl.Euler()."
            )

    def solve(self, net, x, y, z0):
        z0 = tuple(z0)
        if not z0:
            return z0, jnp.asarray(0, jnp.int32)
        slopes = kink_slopes(net)
        if slopes is None:
            return self._iterate(*self._smooth(net, x, y), z0)
        evaluate, direction, project, change = self._kinked(net, x, y, slopes)
        return self._iterate(evaluate, direction, project, z0, leap=True, change=change)

    def _newton_direction(self, hvp, rhs, gnorm, preconditioner):
        """Truncated CG on ``hvp`` to the relative residual ``min(0.5, sqrt(||g_i||))``,
        preconditioned by ``preconditioner()`` (built only when ``CG.precondition``)."""
        prec = preconditioner() if self.linear_solve.precondition else None
        return per_sample_cg(hvp, rhs, jnp.minimum(0.5, jnp.sqrt(gnorm)), self.linear_solve.max_steps, prec)

    def _smooth(self, net, x, y):
        """``(evaluate, direction, project)`` for a smooth energy: the gradient, the Newton
        direction of the activity Hessian, and the plain step ``z + a d``."""
        from ..activity_hessian import error_preconditioner, factor_activity_hessian, mlp_activity_hvp

        def evaluate(z):
            e, g = energies_and_grads(net, z, x, y)
            return e, None, g, per_sample_norm(g)

        def direction(z, _, g, gnorm):
            rhs = tuple(-a for a in g)
            if self._block:
                return factor_activity_hessian(net, z, x, y).solve(rhs)
            if has_block_closed_form(net):  # closed form: two matrix products per layer
                hvp = mlp_activity_hvp(net, z, x, y)
            else:
                hvp = lambda t: jax.jvp(lambda zz: activity_grad(net, zz, x, y), (z,), (t,))[1]  # noqa: E731
            return self._newton_direction(hvp, rhs, gnorm, lambda: error_preconditioner(net, z, x, y))

        def project(z, d, alpha, _):
            return tuple(a + per_row(alpha, a) * b for a, b in zip(z, d))

        return evaluate, direction, project

    def _kinked(self, net, x, y, slopes):
        """``(evaluate, direction, project, change)`` of the active-set iteration for a piecewise-
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
        from ..activity_hessian import (energy_change_from, error_preconditioner, factor_activity_hessian,
                                        mlp_activity_hvp)

        left, right = slopes

        def evaluate(z):
            dm, dp, e = one_sided_derivatives(net, z, x, y, slopes)
            side, held, geff = descent_pieces(z, dm, dp)
            return e, (side, held), geff, per_sample_norm(geff)

        def solve(z, fp, held, rhs, gnorm):
            if self._block:
                return factor_activity_hessian(net, z, x, y, slopes=fp, fixed=held).solve(rhs)
            return self._newton_direction(mlp_activity_hvp(net, z, x, y, slopes=fp, fixed=held), rhs, gnorm,
                                          lambda: error_preconditioner(net, z, x, y, slopes=fp, fixed=held))

        def direction(z, aux, g, gnorm):
            side, held = aux
            fp = [jnp.where(r, right, left).astype(x.dtype) for r in side]
            rhs = tuple(-a for a in g)  # 0 where held (descent_pieces)
            d = solve(z, fp, held, rhs, gnorm)
            # Binding activities (as in projected Newton methods): on a kink, the step on the chosen
            # piece would take them back across it, where the projection would stop them while the
            # others moved as if they had gone on -- not a descent direction in general. Hold them
            # too and solve again on the smaller face.
            binding = [(a == 0) & ~h & jnp.where(r, dd < 0, dd > 0) for a, h, r, dd in zip(z, held, side, d)]
            held2 = [h | b for h, b in zip(held, binding)]
            rhs2 = tuple(jnp.where(b, 0.0, r) for r, b in zip(rhs, binding))
            return jax.lax.cond(jnp.any(jnp.stack([jnp.any(b) for b in binding])),
                                lambda: solve(z, fp, held2, rhs2, gnorm), lambda: d)

        def project(z, d, alpha, aux):
            out = []
            for a, dd, r in zip(z, d, aux[0]):
                t = a + per_row(alpha, a) * dd
                out.append(jnp.where(jnp.where(r, t < 0, t > 0), 0.0, t))
            return tuple(out)

        def change(z, _e):  # exact differences of f: accurate below F's resolution
            from_z = energy_change_from(net, z, x, y)  # the errors at z, once for every trial point

            def measure(z_new, _e_new):
                delta, scale = from_z(z_new)
                return delta, jnp.zeros_like(delta), scale

            return measure

        return evaluate, direction, project, change

    def _tiny(self, d, z):
        """Per sample: the step ``d`` is within ``xtol`` rounding units of the activities,
        ``||d_i|| <= xtol * eps * ||z_i||``."""
        eps = jnp.finfo(z[0].dtype).eps
        return per_sample_norm(d) <= self.xtol * eps * per_sample_norm(z)

    @staticmethod
    def _at_floor(tiny, gnorm_new, gnorm):
        """Per sample: a step within rounding (``tiny``) that did not halve the residual: the
        rounding floor of the residual is reached (a sample that met ``tol`` is frozen anyway)."""
        return tiny & (gnorm_new > 0.5 * gnorm)

    def _iterate(self, evaluate, direction, project, z0, leap=False, change=_difference):
        """The damped Newton loop shared by both energies.

        ``evaluate(z) -> (F_i, aux, g, ||g_i||)`` (``g`` the gradient to descend, ``aux`` what
        ``direction`` and ``project`` need), ``direction(z, aux, g, ||g_i||)`` the Newton
        direction, ``project(z, d, alpha, aux)`` the point reached by steps ``alpha`` (per
        sample) along ``d``, ``change(z, F(z))`` a map ``(z_new, F(z_new)) -> (value,
        reference, scale)``: the energy change ``value - reference`` as :func:`_accept` tests
        it, and the scale of its rounding error (:func:`_difference` by default), built once
        per iteration for all the trial points. Per-sample Armijo
        backtracking; the gradient direction where Newton's is not a descent direction, or
        after a failed line search. A sample at the rounding floor (:meth:`_at_floor`) is
        frozen like a converged one.
        """
        tol, dot = self.tol, per_sample_dot

        def body(carry):
            z, e, aux, g, gnorm, stalled, floored, it = carry
            active = (gnorm > tol) & ~floored
            newton = direction(z, aux, g, gnorm)
            slope_n = dot(g, newton)
            use_newton = jnp.isfinite(slope_n) & (slope_n < 0) & ~stalled
            d = tuple(
                jnp.where(per_row(use_newton, a), jnp.where(jnp.isfinite(a), a, 0.0), -self.fallback_dt * b)
                for a, b in zip(newton, g)
            )
            slope = dot(g, d)
            measure = change(z, e)

            def ls_cond(state):
                k, _, ok = state
                return (k < self.max_backtracks) & ~jnp.all(ok | ~active)

            def ls_body(state):
                k, alpha, ok = state
                z_try = project(z, d, alpha, aux)
                e_try, _, _, gnorm_try = evaluate(z_try)
                ok_new = ok | _accept(*measure(z_try, e_try), gnorm_try, gnorm, alpha * slope)
                return k + 1, jnp.where(ok_new, alpha, alpha / 2), ok_new

            _, alpha, ok = jax.lax.while_loop(ls_cond, ls_body, (0, jnp.ones_like(e), ~active))
            z_new = project(z, d, jnp.where(active & ok, alpha, 0.0), aux)
            new = evaluate(z_new)
            tiny = use_newton & self._tiny(newton, z)
            if not leap:
                return (z_new, *new, active & ~ok, floored | self._at_floor(active & tiny, new[3], gnorm), it + 1)
            # The full step unprojected, across the kinks it meets, where it satisfies Armijo and ends
            # lower than the projected line search: several activities change piece in one iteration
            z_leap = tuple(a + per_row(use_newton & active, a) * b for a, b in zip(z, d))
            leapt = evaluate(z_leap)
            leap_value = measure(z_leap, leapt[0])
            take = (active & use_newton & _accept(*leap_value, leapt[3], gnorm, slope)
                    & (leap_value[0] < measure(z_new, new[0])[0]))
            pick = lambda a, b: jax.tree_util.tree_map(lambda u, v: jnp.where(per_row(take, u), u, v), a, b)  # noqa: E731
            picked = pick(leapt, new)
            return (pick(z_leap, z_new), *picked, active & ~(ok | take),
                    floored | self._at_floor(active & tiny, picked[3], gnorm), it + 1)

        def cond(carry):
            return (carry[-1] < self.max_steps) & jnp.any((carry[4] > tol) & ~carry[6])

        e0, aux0, g0, gnorm0 = evaluate(z0)
        no = jnp.zeros(e0.shape, bool)
        init = (z0, e0, aux0, g0, gnorm0, no, no, jnp.asarray(0, jnp.int32))
        z, *_, it = jax.lax.while_loop(cond, body, init)
        return z, it

