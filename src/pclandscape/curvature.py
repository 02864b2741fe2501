"""Curvature of any scalar objective: dense Hessians, Hessian-vector products, spectra, Lanczos.

Every function takes ``fn(params) -> scalar`` with ``params`` any pytree (for networks, the
list ``[W_1, ..., W_L]``). The flat parameter vector is ``jax.flatten_util.ravel_pytree``
of ``params``: leaves in order, each flattened row-major -- for a list of weight matrices
exactly the order of docs/conventions.md (contract).

Matrix-free methods work on a :class:`HessianOperator`, a symmetric operator given by its
matrix-vector product; :func:`hessian_operator` builds one from ``fn`` (HVPs by
forward-over-reverse autodiff) and :func:`pclandscape.energy_hessian` builds one for the
implicit Hessian of the equilibrated energy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree

from ._autodiff import dense_matrix, flatten_fn, hvp_product, jit_grad
from ._linalg import batch_size_for

__all__ = [
    "HessianOperator",
    "hessian_operator",
    "hessian",
    "hvp",
    "gradient",
    "Eigenspectrum",
    "eigenspectrum",
    "spectral_density",
    "LanczosResult",
    "lanczos",
]


class HessianOperator(eqx.Module):
    """A symmetric ``(size, size)`` operator given by ``mv(v) = H v`` on flat vectors.

    ``args`` holds the arrays the product needs (traced under jit, never baked in as
    constants); ``fn(args, v)`` computes the product. :meth:`mv` is compiled (once per
    ``fn``, shapes and static settings), so repeated products outside ``jax.jit`` cost one
    dispatch each rather than one per primitive.
    """

    fn: Callable = eqx.field(static=True)
    args: Any
    size: int = eqx.field(static=True)
    dtype: Any = eqx.field(static=True)

    def mv(self, v: Float[Array, " p"]) -> Float[Array, " p"]:
        """The product ``H v`` for a flat vector ``v`` of length ``size``."""
        _check_precision(self)
        return _apply(self, v)

    def as_matrix(self, batch_size: int | None = None) -> Float[Array, "p p"]:
        """The dense matrix, built column by column from products (``batch_size`` at a time;
        one at a time when the product involves LAPACK, see :mod:`pclandscape._linalg`)."""
        _check_precision(self)
        return dense_matrix(self, batch_size_for(self.mv, (jnp.zeros((self.size,), self.dtype),), batch_size))


def hessian_operator(fn: Callable[[PyTree], Array], params: PyTree) -> HessianOperator:
    """The Hessian of ``fn`` at ``params`` as a matrix-free :class:`HessianOperator`.

    Products are forward-over-reverse autodiff (``jvp`` of ``grad``), one gradient's cost
    each.
    """
    f, flat = flatten_fn(fn, params)
    return HessianOperator(fn=hvp_product, args=(f, flat), size=int(flat.size), dtype=flat.dtype)


def hessian(fn: Callable[[PyTree], Array], params: PyTree, *, batch_size: int | None = None) -> Float[Array, "p p"]:
    """Dense Hessian ``d^2 fn / d theta^2`` at ``params``, shape ``(p, p)`` (contract).

    ``theta`` is the flat parameter vector (the order of docs/conventions.md). Columns are computed as
    Hessian-vector products, ``batch_size`` at a time (bounds memory for large ``p``;
    ``None``: as many as keep ``batch_size * p <= 2**24``, at least 64).
    """
    return hessian_operator(fn, params).as_matrix(batch_size)


def hvp(fn: Callable[[PyTree], Array], params: PyTree, v) -> Any:
    """Hessian-vector product ``H v`` of ``fn`` at ``params``.

    ``v`` is either a flat vector of length ``p`` (the result is flat) or a pytree shaped
    like ``params`` (the result is such a pytree).
    """
    op = hessian_operator(fn, params)
    unravel = op.args[0].unravel
    is_flat = isinstance(v, (jax.Array, np.ndarray)) and jnp.ndim(v) == 1 and jnp.size(v) == op.size
    vflat = jnp.asarray(v, op.dtype) if is_flat else ravel_pytree(v)[0]
    if vflat.shape != (op.size,):
        raise ValueError(f"v has {vflat.size} entries but params has {op.size}.")
    out = op.mv(vflat)
    return out if is_flat else unravel(out)


def _check_precision(op) -> None:
    """Refuse a float64 operator while x64 is off: JAX would make its products' vectors float32."""
    if jnp.dtype(op.dtype) == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "this Hessian operator was built in float64 (inside jax.enable_x64(True)) but is used with "
            "float64 switched off: use it inside the same `with jax.enable_x64(True):` block that built it.")


@eqx.filter_jit
def _apply(op: HessianOperator, v):
    return op.fn(op.args, v)


def gradient(fn: Callable[[PyTree], Array], params: PyTree) -> Float[Array, " p"]:
    """Flat gradient of ``fn`` at ``params`` (the order of docs/conventions.md)."""
    f, flat = flatten_fn(fn, params)
    return jit_grad(f, flat)


# --------------------------------------------------------------------------- spectra


class Eigenspectrum(NamedTuple):
    """Eigenvalues (ascending) and eigenvectors (columns) of a symmetric matrix."""

    eigenvalues: Array
    eigenvectors: Array

    @property
    def lambda_min(self) -> Array:
        return self.eigenvalues[0]

    @property
    def lambda_max(self) -> Array:
        return self.eigenvalues[-1]

    @property
    def v_min(self) -> Array:
        return self.eigenvectors[:, 0]

    @property
    def v_max(self) -> Array:
        return self.eigenvectors[:, -1]


def eigenspectrum(matrix_or_fn, params: PyTree | None = None) -> Eigenspectrum:
    """Full eigendecomposition of a Hessian: pass a symmetric ``(p, p)`` matrix, or
    ``fn, params`` to use :func:`hessian` first."""
    if params is not None:
        matrix = hessian(matrix_or_fn, params)
    elif isinstance(matrix_or_fn, HessianOperator):
        matrix = matrix_or_fn.as_matrix()
    else:
        matrix = jnp.asarray(matrix_or_fn)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {matrix.shape}.")
    w, v = jnp.linalg.eigh(matrix)
    return Eigenspectrum(w, v)


def spectral_density(
    eigenvalues, grid: Array | int = 200, sigma: float | None = None, span: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-broadened eigenvalue density for plotting: ``(grid, density)``.

    ``density`` integrates to 1 over the grid. ``sigma`` defaults to 1 % of the spectral
    range (or 1e-3 for a degenerate spectrum).
    """
    ev = np.asarray(eigenvalues, dtype=np.float64)
    lo, hi = (ev.min(), ev.max()) if span is None else span
    width = hi - lo
    sigma = sigma if sigma is not None else (0.01 * width if width > 0 else 1e-3)
    if isinstance(grid, int):
        grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, grid)
    grid = np.asarray(grid, dtype=np.float64)
    dens = np.exp(-0.5 * ((grid[:, None] - ev[None, :]) / sigma) ** 2).sum(1)
    dens /= len(ev) * sigma * np.sqrt(2 * np.pi)
    return grid, dens


# --------------------------------------------------------------------------- Lanczos


class LanczosResult(NamedTuple):
    """Extreme eigenpairs from :func:`lanczos`.

    Attributes:
        eigenvalues: ``(k,)`` Ritz values, ascending for ``"smallest"``, descending for
            ``"largest"``.
        eigenvectors: ``(p, k)`` Ritz vectors (unit norm, columns).
        residuals: ``(k,)`` residual norms ``||H v - lambda v||`` (bounds on the eigenvalue
            errors).
        iterations: Krylov dimension used.
        converged: all ``k`` residuals below ``tol * max|lambda|``.
    """

    eigenvalues: Array
    eigenvectors: Array
    residuals: Array
    iterations: int
    converged: bool


_BLOCK = 32


def _reorthogonalise(V, w, j):
    """``w - V[:j+1]^T V[:j+1] w`` in blocks of rows, so the cost grows with ``j``, not the capacity."""
    n_blocks = (j + _BLOCK) // _BLOCK

    def blk(i, w):
        vb = jax.lax.dynamic_slice_in_dim(V, i * _BLOCK, _BLOCK)
        return w - vb.T @ (vb @ w)

    return jax.lax.fori_loop(0, n_blocks, blk, w)


def _product_norms(alpha, beta, xp):
    """``||H v_j|| = sqrt(alpha_j^2 + beta_j^2 + beta_{j-1}^2)`` for each Lanczos vector (exact
    with full re-orthogonalisation; zero for the steps not taken yet): the scale against which
    a small ``beta_j`` means an invariant subspace. Relative, so an operator of norm 1e-6 is
    not mistaken for one whose Krylov space closed after one step (an absolute floor of 1 did
    that to the tiny Hessians of wide muPC nets at the origin)."""
    before = xp.concatenate([xp.zeros((1,), beta.dtype), beta[:-1]])
    return xp.sqrt(alpha * alpha + beta * beta + before * before)


@eqx.filter_jit(compiler_options={"xla_backend_optimization_level": 0})
def _lanczos_extend(op: HessianOperator, V, alpha, beta, j0, j1, breakdown):
    """Lanczos steps ``j0..j1-1`` with full re-orthogonalisation (two Gram-Schmidt passes)."""

    cap = V.shape[0]

    def body(j, carry):
        # No lax.cond here: a cond around the basis would copy it every iteration.
        V, alpha, beta, stop = carry
        v = V[j]
        w = op.mv(v)
        a = jnp.vdot(v, w)
        w = w - a * v - jnp.where(j > 0, beta[j - 1], 0.0) * V[jnp.maximum(j - 1, 0)]
        w = _reorthogonalise(V, w, j)
        w = _reorthogonalise(V, w, j)
        b = jnp.linalg.norm(w)
        alpha = alpha.at[j].set(jnp.where(stop, alpha[j], a))
        beta = beta.at[j].set(jnp.where(stop, beta[j], b))
        # invariant subspace: b negligible against ||H|| (the largest ||H v_i|| so far, this one included)
        stop_now = stop | (b <= breakdown * jnp.max(_product_norms(alpha, beta, jnp)))
        nxt = jnp.minimum(j + 1, cap - 1)
        write = (j + 1 < cap) & ~stop_now
        V = V.at[nxt].set(jnp.where(write, w / jnp.where(write, b, 1.0), V[nxt]))
        return V, alpha, beta, stop_now

    def cond(carry):
        j, (_, _, _, stop) = carry
        return (j < j1) & ~stop

    stop = jnp.asarray(False)
    _, out = jax.lax.while_loop(cond, lambda c: (c[0] + 1, body(c[0], c[1])), (j0, (V, alpha, beta, stop)))
    return out


class _Deflated(eqx.Module):
    """``H + shift Q^T Q`` (Wielandt deflation): the locked eigenvectors (rows of ``q``,
    orthonormal; zero rows are padding) moved by ``shift`` to the far end of the spectrum, so a
    restarted Lanczos finds the next eigenpairs at the wanted end. Unlike projecting them out
    (``P H P``), this adds no spurious zero eigenvalues for rounding to find."""

    op: Any
    q: Array  # (r, p)
    shift: Array

    @property
    def size(self) -> int:
        return self.op.size

    @property
    def dtype(self):
        return self.op.dtype

    def mv(self, v):
        return self.op.mv(v) + self.shift * (self.q.T @ (self.q @ v))


def lanczos(
    fn_or_operator,
    params: PyTree | None = None,
    k: int = 1,
    which: str = "smallest",
    *,
    tol: float | None = None,
    max_iter: int | None = None,
    check_every: int = 16,
    key=None,
    v0: Array | None = None,
    max_restarts: int | None = None,
    max_basis: int | None = None,
) -> LanczosResult:
    """The ``k`` extreme eigenpairs of a Hessian, counted with multiplicity, matrix-free.

    Single-vector Lanczos (with full re-orthogonalisation) sees one direction per eigenspace,
    so alone it returns each distinct eigenvalue once: on ``diag(-1, -1, -1, 0, 2, ...)`` the
    two smallest Ritz values are ``-1, 0``. Hessians of these networks are highly degenerate
    at symmetric points (Kronecker structure at the origin), so this function restarts with
    **locking and deflation**: the converged Ritz vectors of a run are locked, the next run
    works on ``H + sigma Q Q^T`` (Wielandt's deflation: the locked eigenvalues moved past the
    far end of the spectrum) from a fresh random start, and the runs stop when one finds
    nothing beyond the ``k``-th locked value.
    The result holds the ``k`` extreme eigenvalues with their multiplicities (up to the
    tolerance); ``converged`` is False if the restarts ran out first.

    Works for indefinite matrices (the most negative eigenvalue with ``which="smallest"``).
    Only Hessian-vector products are needed, so it runs at ``p >= 3e5``; memory is one
    ``(m, p)`` Krylov basis plus the locked vectors, with ``m <= max_basis``: a run whose
    basis is full before it converged restarts from its wanted Ritz vectors (explicit
    restart), until ``max_iter`` products in all.

    Args:
        fn_or_operator: ``fn(params) -> scalar`` (with ``params``) or a
            :class:`HessianOperator`.
        params: the point, when ``fn`` is given.
        k: number of eigenpairs.
        which: ``"smallest"`` (algebraically) or ``"largest"``.
        tol: stop when each wanted Ritz residual is below ``tol * max|Ritz value|``
            (default: 1e-10 in float64, 1e-5 in float32). The eigenvalue error is at most
            the residual, and typically its square over the spectral gap. Eigenvalues
            closer than ``sqrt(tol) * max|Ritz value|`` count as equal when deciding whether
            a restart found anything new.
        max_iter: maximum Hessian-vector products per run (default ``min(p, 1024)``); raise
            it if ``converged`` is False.
        max_basis: most Krylov vectors held at once (default: as many as fit in 256 MiB, at
            least 64 and at most ``max_iter``); smaller bounds memory at the price of
            restarts (see ``benchmarks/curvature.py`` for the cost at ``p = 3.3e5``).
        check_every: iterations between convergence checks.
        key: PRNG key of the random start (default ``jax.random.key(0)``).
        v0: a given start vector instead (flat, length ``p``).
        max_restarts: deflated restarts allowed (default ``k + 1``, enough for any
            multiplicity: each restart locks at least one more copy).

    Returns:
        A :class:`LanczosResult` (``iterations`` sums the runs' Krylov dimensions).
    """
    if which not in ("smallest", "largest"):
        raise ValueError(f"which={which!r} must be 'smallest' or 'largest'.")
    op = fn_or_operator if isinstance(fn_or_operator, HessianOperator) else None
    if op is None:
        if params is None:
            raise ValueError("lanczos needs params when given a function (or pass a HessianOperator).")
        op = hessian_operator(fn_or_operator, params)
    _check_precision(op)
    p, dtype = op.size, op.dtype
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= p:
        raise ValueError(f"k={k!r} must be an integer between 1 and p={p}.")
    tol = tol if tol is not None else (1e-10 if jnp.dtype(dtype) == jnp.float64 else 1e-5)
    max_restarts = k + 1 if max_restarts is None else int(max_restarts)
    if max_basis is None:
        max_basis = max(64, _BASIS_BYTES // (p * jnp.dtype(dtype).itemsize))
    if isinstance(max_basis, bool) or not isinstance(max_basis, (int, np.integer)) or max_basis < 2:
        raise ValueError(f"max_basis={max_basis!r} must be an integer >= 2 (Krylov vectors held at once).")
    rng = np.random.default_rng(0 if key is None else np.asarray(jax.random.key_data(key)).ravel())
    sign = 1.0 if which == "smallest" else -1.0  # work on "smallest" of sign * H
    vals: list[float] = []
    vecs: list[Array] = []
    res: list[float] = []
    iterations, converged = 0, False
    ok, radius = False, 0.0  # the last run's convergence; the spectral radius estimated by the first run
    for run in range(max_restarts + 1):
        locked = len(vals)
        if locked >= p:
            converged = True
            break
        if k == 1 and run == 1:  # the smallest eigenvalue needs no multiplicity
            converged = ok
            break
        deflated = op
        if vecs:  # zero rows pad the locked block to a power of two: fewer recompilations
            rows = 1 << max(3, (len(vecs) - 1).bit_length())
            q = jnp.zeros((rows, p), dtype).at[: len(vecs)].set(jnp.stack(vecs, axis=0))
            deflated = _Deflated(op, q, jnp.asarray(sign * 3.0 * radius, dtype))  # locked ones past the far end
        if run == 0 and v0 is not None:
            start = jnp.asarray(v0, dtype)
        elif run == 0 and key is not None:
            start = jax.random.normal(key, (p,), dtype)
        else:  # host-side draw: no device compile for a start vector
            start = jnp.asarray(rng.standard_normal(p), dtype)
        wanted = min(max(k - locked, 1), p - locked)  # the ones still missing; then 1, to look for a missed copy
        theta, s_vecs, r, m, ok, rho = _lanczos_run(deflated, wanted, which, start, tol, max_iter, check_every, max_basis)
        if run == 0:
            radius = rho  # spectral radius estimate (the extreme Ritz values)
        iterations += m
        kth = sorted(sign * v for v in vals)[k - 1] if len(vals) >= k else np.inf
        scale = max([abs(v) for v in vals] + [float(np.max(np.abs(theta))) if len(theta) else 0.0, np.finfo(np.float64).tiny])
        same = np.sqrt(tol) * scale
        new = [i for i in range(len(theta)) if (ok or r[i] <= tol * scale) and sign * theta[i] < kth - same]
        if not new:  # nothing beyond the k-th locked value outside the locked space: done
            converged = len(vals) >= k and ok
            if not ok:  # out of products: return the run's unconverged estimates (with their residuals)
                for i in range(min(len(theta), k - len(vals))):
                    vals.append(float(theta[i]))
                    vecs.append(s_vecs[:, i])
                    res.append(float(r[i]))
            break
        for i in new:
            vals.append(float(theta[i]))
            vecs.append(s_vecs[:, i])
            res.append(float(r[i]))
    order = np.argsort([sign * v for v in vals], kind="stable")[:k]
    if len(order) < k:
        converged = False
    return LanczosResult(
        eigenvalues=jnp.asarray(np.asarray(vals)[order], dtype),
        eigenvectors=jnp.stack([vecs[i] for i in order], axis=1),
        residuals=jnp.asarray(np.asarray(res)[order], dtype),
        iterations=iterations,
        converged=bool(converged),
    )


_BASIS_BYTES = 1 << 28  # default memory of one Krylov basis: 256 MiB


def _lanczos_run(op, k, which, v0, tol, max_iter, check_every, max_basis):
    """One Lanczos run from ``v0``: ``(theta, vectors (p, k), residuals, m, converged, rho)``
    for the ``k`` extreme Ritz pairs (in exact arithmetic each distinct eigenvalue at most
    once), ``rho`` the largest ``|Ritz value|`` (an estimate of the spectral radius), ``m``
    the products spent. Cycles of at most ``max_basis`` vectors, each restarted from the sum
    of the previous cycle's wanted Ritz vectors, until convergence or ``max_iter`` products."""
    p = op.size
    max_iter = max_iter or min(p, 1024)
    spent = 0
    while True:
        limit = min(int(max_basis), p, max_iter - spent)  # a Krylov basis has at most p vectors
        theta, vecs, res, m, ok, rho = _lanczos_cycle(op, k, which, v0, tol, limit, check_every)
        spent += m
        if ok or m < limit or spent >= max_iter:
            return theta, vecs, res, spent, ok, rho
        v0 = jnp.sum(vecs, axis=1)  # explicit restart: the wanted Ritz vectors' span


def _lanczos_cycle(op, k, which, v0, tol, max_iter, check_every):
    """One Krylov cycle of at most ``max_iter`` vectors from ``v0`` (see :func:`_lanczos_run`)."""
    p, dtype = op.size, op.dtype
    breakdown = 1e3 * float(jnp.finfo(dtype).eps)
    # One Krylov basis of up to ~2^25 entries is allocated at once (each new size compiles
    # the iteration again); beyond that it grows by doubling.
    cap = min(max_iter, max(2 * check_every, 64, (1 << 25) // p))
    cap = -(-cap // _BLOCK) * _BLOCK  # a whole number of re-orthogonalisation blocks
    V, alpha, beta = _lanczos_init(v0, cap)
    j = 0
    while True:
        j1 = min(j + check_every, cap)
        V, alpha, beta, stopped = _lanczos_extend(op, V, alpha, beta, jnp.asarray(j), jnp.asarray(j1), breakdown)
        a_np, b_np = np.asarray(alpha, np.float64), np.asarray(beta, np.float64)
        if not (np.all(np.isfinite(a_np[:j1])) and np.all(np.isfinite(b_np[:j1]))):
            raise FloatingPointError("lanczos: the Hessian-vector product returned NaN or inf (is the point, or the "
                                     "objective there, finite?).")
        stopped = bool(stopped)
        if stopped:  # invariant subspace: find its dimension
            scale = np.maximum.accumulate(_product_norms(a_np[:j1], b_np[:j1], np))
            m = int(np.argmax(b_np[:j1] <= breakdown * scale)) + 1
        else:
            m = j1
        t = np.diag(a_np[:m]) + np.diag(b_np[: m - 1], 1) + np.diag(b_np[: m - 1], -1)
        theta, s = np.linalg.eigh(t)
        idx = np.arange(min(k, m)) if which == "smallest" else np.arange(m - 1, m - 1 - min(k, m), -1)
        res = np.abs(b_np[m - 1] * s[m - 1, idx]) if not stopped else np.zeros(len(idx))
        scale = max(np.max(np.abs(theta)), np.finfo(np.float64).tiny)
        converged = len(idx) == k and bool(np.all(res <= tol * scale))
        if converged or stopped or m >= max_iter:
            break
        j = j1
        if j1 == cap:  # grow the basis
            new_cap = -(-min(2 * cap, max_iter) // _BLOCK) * _BLOCK
            V = jnp.concatenate([V, jnp.zeros((new_cap - cap, p), dtype)])
            alpha = jnp.concatenate([alpha, jnp.zeros((new_cap - cap,), dtype)])
            beta = jnp.concatenate([beta, jnp.zeros((new_cap - cap,), dtype)])
            cap = new_cap
            if bool(b_np[j1 - 1] > 0):
                V = V.at[j1].set(_next_vector(op, V, alpha, beta, jnp.asarray(j1)))
    vecs = _ritz_vectors(V, jnp.asarray(s[:, idx], dtype), m)
    return theta[idx], vecs, res, m, bool(converged or stopped), float(np.max(np.abs(theta)))


@eqx.filter_jit
def _lanczos_init(v0, cap):
    V = jnp.zeros((cap, v0.size), v0.dtype).at[0].set(v0 / jnp.linalg.norm(v0))
    return V, jnp.zeros((cap,), v0.dtype), jnp.zeros((cap,), v0.dtype)


@eqx.filter_jit
def _ritz_vectors(V, s, m):
    return V[:m].T @ s


@eqx.filter_jit
def _next_vector(op, V, alpha, beta, j):
    """Recompute the (j)-th Lanczos vector after the basis was grown (it was not stored)."""
    v = V[j - 1]
    w = op.mv(v) - alpha[j - 1] * v - jnp.where(j > 1, beta[j - 2], 0.0) * V[jnp.maximum(j - 2, 0)]
    w = _reorthogonalise(V, w, j - 1)
    w = _reorthogonalise(V, w, j - 1)
    return w / jnp.linalg.norm(w)
