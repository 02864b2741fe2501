"""Classification of critical points: minimum, strict saddle, non-strict saddle, maximum.

Definition 1 of the paper: a critical point (zero gradient) is a *strict saddle* when its
Hessian has a negative eigenvalue; a critical point whose Hessian is positive semi-definite
but where some higher-order derivative has a descent direction is a *non-strict saddle*.
Following the paper's footnote 1, ``order`` is the order of the first derivative that shows
a descent direction: 2 for a strict saddle, ``L`` at the origin of the loss of a deep
linear network with ``L`` weight matrices (all derivatives of order ``< L`` vanish there).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PyTree

from ._checks import nonnegative_int, positive_int, positive_number
from ._linalg import batch_size_for
from ._autodiff import dense_matrix, flatten_fn, jit_value_and_grad
from .curvature import HessianOperator, hessian_operator, lanczos

if TYPE_CHECKING:
    from .networks import MLP

__all__ = ["CriticalPoint", "CriticalPointSearch", "ZeroLayersPoint", "classify_critical_point",
           "directional_derivatives", "find_critical_point", "zero_layers_critical_point"]

KINDS = ("minimum", "strict_saddle", "non_strict_saddle", "maximum", "not_critical")


class CriticalPoint(NamedTuple):
    """Result of :func:`classify_critical_point` (contract).

    Attributes:
        kind: ``"minimum"``, ``"strict_saddle"``, ``"non_strict_saddle"``, ``"maximum"`` or
            ``"not_critical"``.
        grad_norm: ``||grad fn||`` at the point.
        lambda_min: the smallest Hessian eigenvalue.
        lambda_max: the largest Hessian eigenvalue.
        n_negative: the number of eigenvalues below ``-eig_tol``, counted with multiplicity.
        n_zero: the number of eigenvalues within ``eig_tol`` of zero, counted with
            multiplicity. Both counts are exact in the dense case; with
            Lanczos (``k`` extreme eigenvalues at each end, with multiplicity) None when the
            computed ends do not reach past the range counted (e.g. all ``k`` smallest are
            negative): raise ``k`` to count them.
        escape_direction: a unit descent direction shaped like ``params`` (the eigenvector of
            ``lambda_min`` for a strict saddle, the higher-order direction for a non-strict
            one), or None.
        order: order of the first derivative showing descent (2 strict, >= 3 non-strict),
            None if none was found (minimum) or the point is not critical.
        derivatives: for a non-strict saddle, the directional derivatives ``D^k fn[d, ..., d]``
            for ``k = 1..order`` along the escape direction.
    """

    kind: str
    grad_norm: float
    lambda_min: float
    lambda_max: float
    n_negative: int | None
    n_zero: int | None
    escape_direction: Any
    order: int | None
    derivatives: tuple | None = None


class CriticalPointSearch(NamedTuple):
    """Result of :func:`find_critical_point`.

    Attributes:
        params: the point found, shaped like the starting ``params``.
        grad_norm: ``||grad fn||`` there (the residual of the search).
        start_grad_norm: ``||grad fn||`` at the starting point.
        distance: ``||theta* - theta_0||`` (flat parameter vectors).
        iterations: Newton iterations taken.
        converged: ``grad_norm <= tol`` and ``step_norm <= xtol * (1 + ||theta*||)``.
        step_norm: the norm of the Newton step from the point found: an estimate of its distance
            to the exact critical point (at a degenerate one, the distance over the degree of
            the gradient there).
    """

    params: Any
    grad_norm: float
    start_grad_norm: float
    distance: float
    iterations: int
    converged: bool
    step_norm: float = float("nan")


@eqx.filter_jit
def _gauss_newton_step(f, w, cg_steps: int):
    """Minimum-norm Newton step on the gradient: ``d`` minimising ``||g + H d||`` by CG on the
    normal equations ``H^2 d = -H g`` (``H`` symmetric, possibly singular and indefinite)."""
    grad = jax.grad(f)
    g = grad(w)
    hvp = lambda v: jax.jvp(grad, (w,), (v,))[1]  # noqa: E731
    d, _ = jax.scipy.sparse.linalg.cg(lambda v: hvp(hvp(v)), -hvp(g), maxiter=cg_steps, tol=1e-14)
    return g, d


_MULTIPLES = np.arange(1.0, 9.0)  # step multiples tried: a degenerate root of degree m sits at m times the Newton step


@eqx.filter_jit
def _grad_norms_along(f, w, d, alphas):
    """``||grad f(w + a d)||`` for each ``a`` in ``alphas`` (one compiled call, 8 at a time)."""
    return jax.lax.map(lambda a: jnp.linalg.norm(jax.grad(f)(w + a * d)), alphas, batch_size=len(_MULTIPLES))


def find_critical_point(
    fn: Callable[[PyTree], Array],
    params: PyTree,
    *,
    tol: float = 1e-10,
    xtol: float = 1e-10,
    max_iter: int = 50,
    cg_steps: int = 500,
    max_backtracks: int = 30,
) -> CriticalPointSearch:
    """A critical point of ``fn`` near ``params``: Newton's method on the gradient (contract).

    Each iteration takes the minimum-norm solution ``d`` of ``min ||g + H d||`` (``g``, ``H``
    the gradient and Hessian at the current point; matrix-free, CG on ``H^2 d = -H g``) and a
    step ``theta + a d`` that lowers ``||g||``. Unlike gradient descent it is attracted by
    saddles as much as by minima, so started on a plateau of a training run it lands on the
    saddle that plateau is near.

    **Degenerate critical points** (the saddles of deep linear networks: at the origin of a
    network with ``H`` hidden layers the gradient is a polynomial of degree ``H`` in the
    weights, the Hessian vanishes for ``H >= 2``) slow Newton's method to a linear rate: where
    the gradient is homogeneous of degree ``m`` about the critical point ``theta*``, Euler's
    identity ``H (theta - theta*) = m g`` makes the Newton step ``-(theta - theta*) / m``, so
    each step only removes ``1/m`` of the distance. So the multiples ``a = 1, ..., 8`` of the
    step are tried and the one with the smallest ``||g||`` taken (``a = m`` lands on ``theta*``
    up to the higher-degree terms; a multiple ``a > 1`` only while ``a ||d|| <= 1 + ||theta||``,
    an extrapolation rather than a jump across the landscape); when none lowers ``||g||``, ``a = 1/2, 1/4, ...``
    (``max_backtracks`` halvings). And a small gradient is not yet a critical point there:
    ``||g|| ~ ||theta - theta*||^m``, so ``||g|| = 1e-10`` can leave ``theta`` 1e-5 away, where
    the Hessian's ``O(||theta - theta*||^{m-1})`` eigenvalues would make a degenerate saddle
    look strict. The search stops when ``||g|| <= tol`` **and** the next Newton step, which
    estimates the remaining distance, is below ``xtol * (1 + ||theta||)``; or after
    ``max_iter`` iterations, or when no step lowers ``||g||``. Run it in float64 for these
    tolerances; the result reports both residuals, so a failed search is visible, never silent.

    Args:
        fn: scalar objective of ``params``.
        params: the starting point (any pytree).
        tol: gradient-norm tolerance.
        xtol: step tolerance, relative to ``1 + ||theta||``.
        max_iter: Newton iterations at most.
        cg_steps: CG iterations per Newton step.
        max_backtracks: step halvings per iteration before giving up.

    Returns:
        A :class:`CriticalPointSearch`.
    """
    for name, value in (("tol", tol), ("xtol", xtol)):
        positive_number("find_critical_point", name, value)
    for name, value in (("max_iter", max_iter), ("cg_steps", cg_steps), ("max_backtracks", max_backtracks)):
        positive_int("find_critical_point", name, value)
    f, w0 = flatten_fn(fn, params)
    if not bool(jnp.all(jnp.isfinite(w0))):
        raise ValueError("find_critical_point: params contain NaN or inf.")
    # the step sizes tried, in one compiled call: the multiples, then the halvings
    alphas = np.concatenate([_MULTIPLES, 0.5 ** np.arange(1, max_backtracks + 1)])
    n_mult = len(_MULTIPLES)
    w = w0
    g, d = _gauss_newton_step(f, w, cg_steps)
    gn0 = gn = float(jnp.linalg.norm(g))
    it = 0
    while True:
        dn, wn = float(jnp.linalg.norm(d)), float(jnp.linalg.norm(w))
        converged = gn <= tol and dn <= xtol * (1.0 + wn)
        if converged or it >= max_iter:
            break
        norms = np.asarray(_grad_norms_along(f, w, d, jnp.asarray(alphas, w.dtype)))
        # a multiple extrapolates the step; it may not jump further than the point's own size
        lowers = np.isfinite(norms) & (norms < gn) & ((alphas <= 1.0) | (alphas * dn <= 1.0 + wn))
        it += 1
        if not lowers.any():
            break
        # the multiple with the smallest ||g||, else the largest halving that lowers it
        best = (int(np.argmin(np.where(lowers[:n_mult], norms[:n_mult], np.inf))) if lowers[:n_mult].any()
                else n_mult + int(np.argmax(lowers[n_mult:])))
        w = w + float(alphas[best]) * d
        g, d = _gauss_newton_step(f, w, cg_steps)
        gn = float(jnp.linalg.norm(g))
    return CriticalPointSearch(f.unravel(w), gn, gn0, float(jnp.linalg.norm(w - w0)), it, converged, dn)


class ZeroLayersPoint(NamedTuple):
    """Result of :func:`zero_layers_critical_point`.

    Attributes:
        net: the network with the two weight layers set to zero.
        layers: the 1-based indices ``(j, k)``, ``j < k``, of the zeroed layers ``W_j``, ``W_k``.
        distance: ``sqrt(||W_j||^2 + ||W_k||^2)``, the distance moved (flat parameter vectors).
    """

    net: "MLP"
    layers: tuple[int, int]
    distance: float


def zero_layers_critical_point(net: MLP, layers: tuple[int, int] | None = None) -> ZeroLayersPoint:
    """The exact critical point of the loss obtained by setting two weight layers to zero.

    For an MLP without biases or skips whose activation has ``f(0) = 0`` (linear, tanh, ReLU),
    any point with two zero layers ``W_j = W_k = 0`` (``j < k``) is a critical point of the
    loss (Eq 1) whatever the other weights: the gradient ``dL/dW_l = delta_l a_{l-1}^T`` has a
    zero input ``a_{l-1}`` for every ``l > j`` (the activations above a zero layer vanish) and
    a zero back-propagated error ``delta_l`` for every ``l < k`` (it passes through
    ``W_k^T = 0``). With ``k = L`` (the output layer) it is a critical point of the equilibrated
    energy F* too: the output error cannot reach the hidden layers, so the equilibrium is the
    feedforward pass, every hidden error is zero, and the output layer's gradient
    ``-e_L f(z_{L-1})^T`` has ``z_{L-1} = 0``. (With ``k < L`` the activities above ``W_k``
    move at equilibrium and F*'s gradient is not zero in general.) For ReLU the point is a kink,
    and it is critical in the one-sided sense too: every step changes ``L`` only at second order.
    (One zero layer is not enough, though JAX's gradient of a ReLU net is zero there as well:
    it takes ``f'(0) = 0`` at the kink.)

    These are the saddles a deep network started near the origin sits near (the origin is
    one of them); unlike the origin they need not be degenerate: with ``W_1 = W_L = 0`` the
    loss Hessian of a linear or tanh net (``f'(0) = 1``, ``f''(0) = 0``) is nonzero only between
    ``W_1`` and ``W_L`` and its eigenvalues are
    ``+-(1/N) sigma_i(Y^T X) sigma_j(W_{L-1} ... W_2)`` (and zeros), a strict saddle
    wherever the middle product and ``Y^T X`` are nonzero. The gradient is exactly zero (products
    with exact zeros), so the point needs no search (:func:`find_critical_point` converges
    only linearly towards such degenerate critical sets).

    Args:
        net: a :class:`pclandscape.MLP` with at least two layers, no biases, no skips.
        layers: the two layers to zero (1-based, any order); default: the two of smallest
            Frobenius norm, the nearest such point.

    Returns:
        A :class:`ZeroLayersPoint`.
    """
    from .networks import MLP

    if not isinstance(net, MLP):
        raise ValueError(f"zero_layers_critical_point needs a pcl.MLP, got {type(net).__name__}.")
    if net.biases is not None or net.residual:
        raise ValueError("zero_layers_critical_point: the net has biases or skips, so zero layers do not zero the "
                         "activations above them; build it with use_bias=False, residual=False.")
    n = net.n_layers
    if n < 2:
        raise ValueError("zero_layers_critical_point needs at least two weight layers.")
    f0 = jnp.asarray(net.activation(jnp.zeros((), net.weights[0].dtype)))
    if float(f0) != 0.0:
        raise ValueError(f"zero_layers_critical_point needs an activation with f(0) = 0; "
                         f"{net.activation_name}(0) = {float(f0)}.")
    norms = [float(jnp.linalg.norm(w)) for w in net.weights]
    if layers is None:
        layers = tuple(int(i) + 1 for i in np.argsort(norms, kind="stable")[:2])
    layers = tuple(sorted(int(i) for i in layers))
    if len(layers) != 2 or layers[0] == layers[1] or not all(1 <= i <= n for i in layers):
        raise ValueError(f"layers must be two distinct layer indices in 1..{n}, got {layers}.")
    zeroed = [jnp.zeros_like(w) if i + 1 in layers else w for i, w in enumerate(net.weights)]
    return ZeroLayersPoint(net.with_weights(zeroed), layers, math.hypot(*(norms[i - 1] for i in layers)))


def directional_derivatives(fn: Callable, params: PyTree, direction: PyTree, max_order: int) -> np.ndarray:
    """``[D^1 fn[d], D^2 fn[d, d], ..., D^K fn[d, ..., d]]`` at ``params`` by nested ``jax.jvp``.

    ``D^k fn[d^k] = d^k/dt^k fn(params + t d) |_{t=0}``.
    """
    f, flat = flatten_fn(fn, params)
    d, _ = ravel_pytree(direction)
    return np.asarray(_derivs(f, flat, jnp.asarray(d, flat.dtype)[None], max_order))[0]


def _nested_jvp(f, flat, d, max_order):
    g = lambda t: f(flat + t * d)
    out = []
    fk = g
    for _ in range(max_order):
        fk = (lambda h: (lambda t: jax.jvp(h, (t,), (jnp.ones_like(t),))[1]))(fk)
        out.append(fk(jnp.zeros((), flat.dtype)))
    return jnp.stack(out)


def _taylor(f, flat, d, max_order):
    """Derivatives of ``t -> f(flat + t d)`` at 0 by Taylor-mode AD (``jax.experimental.jet``):
    linear in the order, where nested ``jvp`` grows as ``2^order``."""
    from jax.experimental import jet

    g = lambda t: f(flat + t * d)
    one, zero = jnp.ones((), flat.dtype), jnp.zeros((), flat.dtype)
    _, series = jet.jet(g, (zero,), ((one,) + (zero,) * (max_order - 1),))
    return jnp.stack(series[0] if isinstance(series, tuple) and len(series) == 1 and not hasattr(series[0], "shape") else series)


@eqx.filter_jit
def _derivs_jvp(f, flat, ds, max_order, batch_size):
    return jax.lax.map(lambda d: _nested_jvp(f, flat, d, max_order), ds, batch_size=batch_size)


@eqx.filter_jit
def _derivs_jet(f, flat, ds, max_order, batch_size):
    return jax.lax.map(lambda d: _taylor(f, flat, d, max_order), ds, batch_size=batch_size)


def _derivs(f, flat, ds, max_order):
    """``(n, max_order)`` directional derivatives along each row of ``ds``.

    Taylor mode when every primitive of ``f`` supports it, nested ``jax.jvp`` otherwise
    (e.g. through a Cholesky factorisation).
    """
    batch_size = batch_size_for(f, (flat,), ds.shape[0])
    try:
        return _derivs_jet(f, flat, ds, max_order, batch_size)
    except (KeyError, NotImplementedError, TypeError):
        return _derivs_jvp(f, flat, ds, max_order, batch_size)


@eqx.filter_jit
def _eigh(op, batch_size):
    return jnp.linalg.eigh(dense_matrix(op, batch_size))


def _descent_order(derivs: np.ndarray, start: int, tol: float) -> tuple[int | None, float]:
    """First order ``k >= start`` whose derivative shows descent, given the lower ones vanish.

    Returns ``(order, sign)`` where moving along ``sign * d`` descends; ``(None, 0)`` if the
    first non-vanishing derivative is even and positive (ascent) or all vanish.
    """
    for k in range(start, len(derivs) + 1):
        val = derivs[k - 1]
        if abs(val) <= tol * math.factorial(k):
            continue
        if k % 2 == 1:
            return k, -float(np.sign(val))
        return (k, 1.0) if val < 0 else (None, 0.0)
    return None, 0.0


def _check_finite(flat, value, grad) -> None:
    """A point with NaN/inf parameters, objective or gradient has no kind: say which is bad."""
    bad = [name for name, ok in (("parameters", bool(jnp.all(jnp.isfinite(flat)))),
                                 ("objective", bool(jnp.isfinite(value))),
                                 ("gradient", bool(np.all(np.isfinite(grad))))) if not ok]
    if bad:
        raise FloatingPointError(
            f"classify_critical_point: NaN or inf in the {', '.join(bad)} at this point, so it has no kind; check "
            f"the parameters (a diverged training run?) and the objective."
        )


def _counts(lo: np.ndarray, hi: np.ndarray, p: int, eig_tol: float, converged: bool):
    """Negative and zero eigenvalue counts from the ``k`` smallest (``lo``, ascending) and ``k``
    largest (``hi``, descending) eigenvalues counted with multiplicity: exact where the
    computed ends reach past the range counted, else None (never a lower bound posing as a count)."""
    if not converged:
        return None, None
    n_neg = n_zero = None
    if np.any(lo >= -eig_tol):  # every negative eigenvalue is among the k smallest
        n_neg = int(np.sum(lo < -eig_tol))
    elif np.any(hi < -eig_tol):  # every non-negative one is among the k largest
        n_neg = p - int(np.sum(hi >= -eig_tol))
    if np.any(lo > eig_tol):
        n_zero = int(np.sum(np.abs(lo) <= eig_tol))
    elif np.any(hi < -eig_tol):
        n_zero = int(np.sum(np.abs(hi) <= eig_tol))
    return n_neg, n_zero


def classify_critical_point(
    fn: Callable[[PyTree], Array],
    params: PyTree,
    tol: float | None = None,
    *,
    eig_tol: float | None = None,
    max_order: int = 8,
    n_directions: int = 32,
    dense_max: int = 4096,
    k: int = 8,
    key=None,
    hessian: HessianOperator | None = None,
) -> CriticalPoint:
    """Classify ``params`` as a critical point of ``fn`` (contract).

    1. ``||grad|| > tol``: ``"not_critical"``.
    2. Hessian spectrum (dense ``eigh`` for ``p <= dense_max``, else Lanczos for the ``k``
       extreme eigenvalues at each end): a negative eigenvalue makes a ``"strict_saddle"``
       (order 2; a negative definite Hessian a ``"maximum"``); a positive definite one a
       ``"minimum"``.
    3. Positive semi-definite with zero eigenvalues: search the Hessian's null space for a
       higher-order descent direction. Candidates are ``n_directions`` random unit
       combinations of null-space eigenvectors, each also with the sign of every parameter
       leaf (layer) flipped in turn; along each, the directional derivatives
       ``D^j fn[d^j]``, ``j <= max_order`` (nested ``jax.jvp``), give the first non-vanishing
       order: odd, or even and negative, means descent. The smallest such order over the
       candidates is reported (``"non_strict_saddle"``); none means ``"minimum"`` (as far
       as ``max_order`` shows).

    Classify the critical point itself, not a point near it: near a *degenerate* one (the
    saddles of deep linear networks) the gradient is tiny (``~ distance^m``) while the Hessian's
    eigenvalues are of order ``distance^(m-1)``, so a point 1e-5 away can pass the gradient test
    and look like a strict saddle. Refine such a point with :func:`find_critical_point` first
    (its ``step_norm`` estimates the remaining distance).

    Raises ``FloatingPointError`` when the parameters, objective, gradient or Hessian hold NaN
    or inf (such a point has no kind).

    Args:
        fn: scalar objective of ``params``.
        params: the point (any pytree; for networks ``[W_1, ..., W_L]``).
        tol: gradient-norm tolerance (default ``1e-8`` in float64, ``1e-4`` in float32); the
            derivative tolerance of step 3 is ``tol * j!``.
        eig_tol: eigenvalues with ``|lambda| <= eig_tol`` count as zero (default ``tol``).
        max_order: highest derivative order searched.
        n_directions: random null-space directions tried.
        dense_max: largest ``p`` for a dense eigendecomposition.
        k: eigenpairs per end computed by Lanczos above ``dense_max``.
        key: PRNG key for the random directions.
        hessian: the Hessian as a :class:`~pclandscape.curvature.HessianOperator`, when a
            cheaper one than autodiff of ``fn`` exists (e.g. ``pcl.energy_hessian_operator(...)`` for the
            equilibrated energy); it must be the Hessian of ``fn``.
    """
    for name, value in (("tol", tol), ("eig_tol", eig_tol)):
        if value is not None:
            positive_number("classify_critical_point", name, value)
    for name, value in (("max_order", max_order), ("k", k)):
        positive_int("classify_critical_point", name, value)
    for name, value in (("n_directions", n_directions), ("dense_max", dense_max)):
        nonnegative_int("classify_critical_point", name, value)
    f, flat = flatten_fn(fn, params)
    unravel = f.unravel
    p = flat.size
    is64 = flat.dtype == jnp.float64
    tol = tol if tol is not None else (1e-8 if is64 else 1e-4)
    eig_tol = eig_tol if eig_tol is not None else tol
    key = jax.random.key(0) if key is None else key

    value, grad = jit_value_and_grad(f, flat)
    grad = np.asarray(grad)
    grad_norm = float(np.linalg.norm(grad))
    _check_finite(flat, value, grad)
    op = hessian_operator(fn, params) if hessian is None else hessian
    if op.size != p:
        raise ValueError(f"hessian has size {op.size} but params has {p} entries.")
    if p <= dense_max:
        evals, evecs = _eigh(op, batch_size_for(op.mv, (flat,), None))
        evals_np, evecs_np = np.asarray(evals), np.asarray(evecs)
        if not np.all(np.isfinite(evals_np)):
            raise FloatingPointError("classify_critical_point: the Hessian holds NaN or inf at this point (the objective "
                                     "is not twice differentiable there, or overflows); it has no kind.")
        lam_min, lam_max = float(evals_np[0]), float(evals_np[-1])
        v_min = evecs_np[:, 0]
        null = evecs_np[:, np.abs(evals_np) <= eig_tol]
    else:
        lo = lanczos(op, k=min(k, p), which="smallest", key=key)
        hi = lanczos(op, k=min(k, p), which="largest", key=jax.random.fold_in(key, 1))
        lo_np, hi_np = np.asarray(lo.eigenvalues), np.asarray(hi.eigenvalues)
        evals_np = np.concatenate([lo_np, hi_np])
        lam_min, lam_max = float(lo_np[0]), float(hi_np[0])
        lo_vecs = np.asarray(lo.eigenvectors)
        v_min = lo_vecs[:, 0]
        null = lo_vecs[:, np.abs(lo_np) <= eig_tol]
    if p <= dense_max:
        n_neg = int(np.sum(evals_np < -eig_tol))
        n_zero = int(np.sum(np.abs(evals_np) <= eig_tol))
    else:
        n_neg, n_zero = _counts(lo_np, hi_np, p, eig_tol, lo.converged and hi.converged)

    def result(kind, direction=None, order=None, derivs=None):
        d = None if direction is None else unravel(jnp.asarray(direction, flat.dtype))
        return CriticalPoint(kind, grad_norm, lam_min, lam_max, n_neg, n_zero, d, order, derivs)

    if grad_norm > tol:
        return result("not_critical")
    if lam_max < -eig_tol:
        return result("maximum", v_min, None)
    if lam_min < -eig_tol:
        return result("strict_saddle", v_min, 2)
    if null.shape[1] == 0:
        return result("minimum")

    # higher-order search in the null space: all candidates at once (vmapped nested jvps)
    leaves = jax.tree_util.tree_leaves(params)
    bounds = np.cumsum([0] + [int(np.size(a)) for a in leaves])
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    d = rng.standard_normal((n_directions, null.shape[1])) @ null.T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    signs = [np.ones(p)]
    for i in range(len(leaves)):
        sgn = np.ones(p)
        sgn[bounds[i] : bounds[i + 1]] = -1.0
        signs.append(sgn)
    cands_np = np.concatenate([d * sg for sg in signs])
    cands = jnp.asarray(cands_np, flat.dtype)
    best = (None, None, None)
    for order_limit in sorted({min(4, max_order), max_order}):  # cheap orders first
        all_derivs = np.asarray(_derivs(f, flat, cands, order_limit))
        for cand, derivs in zip(cands_np, all_derivs):
            if abs(derivs[0]) > tol or abs(derivs[1]) > 2 * eig_tol:
                continue  # not a null direction to working precision
            order, sgn = _descent_order(derivs, 3, tol)
            if order is not None and (best[0] is None or order < best[0]):
                best = (order, sgn * cand, derivs[:order] * np.array([sgn**j for j in range(1, order + 1)]))
        if best[0] is not None:
            break
    if best[0] is None:
        return result("minimum")
    return result("non_strict_saddle", best[1], best[0], tuple(float(v) for v in best[2]))
