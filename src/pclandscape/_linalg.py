"""Guards against a deadlock of batched LAPACK calls on XLA:CPU.

jaxlib's CPU LAPACK kernels split a *batched* call (a vmapped Cholesky, triangular solve, LU,
inverse...) into tasks on XLA's intra-op thread pool and block until they finish. When such a
call itself runs on a pool thread inside a loop (``lax.map``, ``while_loop``) and the other pool
threads are blocked too, the tasks never run: the process hangs with every thread idle (seen
here on 2 cores: ``jax::ParallelBatchMap`` waiting in ``lapack_dtrsm_ffi``). A single-core
process, or unbatched calls, do not hang.

So this library never batches LAPACK calls inside loops: per-sample factorisations go through
:func:`map_unbatched` (a sequential ``lax.map``), and the helpers that vectorise a user
function over many points (dense Hessians, landscape grids, derivative searches) evaluate it
one point at a time when its computation contains a linear-algebra primitive
(:func:`batch_size_for`). :func:`per_sample_cg` (matrix-free, no LAPACK) solves many
independent per-sample systems at once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_LINALG = {
    "cholesky",
    "triangular_solve",
    "lu",
    "lu_pivots_to_permutation",
    "eigh",
    "eig",
    "qr",
    "householder_product",
    "svd",
    "schur",
    "hessenberg",
    "tridiagonal",
    "tridiagonal_solve",
}


def _walk(jaxpr) -> bool:
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in _LINALG:
            return True
        for v in eqn.params.values():
            for sub in v if isinstance(v, (tuple, list)) else (v,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns") and _walk(inner):
                    return True
    return False


def has_linalg(fn, *args) -> bool:
    """Whether ``fn(*args)`` uses a LAPACK-backed linear-algebra primitive."""
    try:
        return _walk(jax.make_jaxpr(fn)(*args).jaxpr)
    except Exception:  # noqa: BLE001 - be conservative if the function cannot be traced here
        return True


def batch_size_for(fn, args, default: int | None) -> int | None:
    """``default``, or 1 when ``fn`` contains linear algebra (see the module docstring)."""
    return 1 if has_linalg(fn, *args) else default


def map_unbatched(fn, xs):
    """``lax.map`` without batching: one unbatched call per leading index."""
    return jax.lax.map(fn, xs)


def inv_per_sample(a):
    """Inverses of a stack of matrices ``(N, n, n)``, one unbatched LAPACK call each."""
    if a.shape[0] == 1:
        return jnp.linalg.inv(a[0])[None]
    return map_unbatched(jnp.linalg.inv, a)


def per_row(v, like):
    """Reshape a per-sample vector ``(N,)`` to broadcast against an ``(N, ...)`` array."""
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


def per_sample_dot(u, v):
    """``(N,)`` inner products ``<u_i, v_i>`` of two tuples of ``(N, ...)`` arrays (one per layer)."""
    return sum(jnp.sum((a * c).reshape(a.shape[0], -1), axis=1) for a, c in zip(u, v))


def per_sample_cg(matvec, b, rtol, max_steps, precondition=None):
    """Conjugate gradients run independently for every sample (the operator is block diagonal).

    ``b`` is a tuple of ``(N, ...)`` arrays (one per layer) and ``matvec`` maps such a tuple to
    one of the same shapes. Each sample has its own step sizes and stops at
    ``||r_i|| <= rtol ||b_i||`` (``rtol`` a scalar or one value per sample; the residual of the
    unpreconditioned system), or when it meets non-positive curvature (its iterate so far is
    returned; in the first direction, that direction ``M^{-1} b``). A zero right-hand side
    gives a zero solution (divisions are guarded), which matters when the solve is vmapped
    over many right-hand sides.

    ``precondition``: optional map ``r -> M^{-1} r`` with ``M`` symmetric positive definite
    and block diagonal over samples (preconditioned CG: the same iterates as CG on
    ``M^{-1/2} A M^{-1/2}``, whose spectrum then sets the number of products).
    """
    dot = per_sample_dot
    axpy = lambda alpha, u, v: tuple(c + per_row(alpha, c) * a for a, c in zip(u, v))
    prec = (lambda r: r) if precondition is None else precondition
    x = jax.tree_util.tree_map(jnp.zeros_like, b)
    rr = dot(b, b)
    stop = rtol**2 * rr
    z = prec(b)
    rz = dot(b, z)

    def cond(state):
        k, _, _, _, _, rr, alive = state
        return (k < max_steps) & jnp.any(alive & (rr > stop))

    def body(state):
        k, x, r, p, rz, rr, alive = state
        ap = matvec(p)
        pap = dot(p, ap)
        curved = (pap > 0) | (rr <= stop)
        # non-positive curvature already in the first direction: return that direction (the
        # preconditioned steepest descent one, as truncated Newton methods do); later: the iterate so far
        x = axpy(jnp.where((k == 0) & alive & ~curved, 1.0, 0.0), p, x)
        alive = alive & curved  # non-positive curvature: stop this sample
        active = alive & (rr > stop)
        alpha = jnp.where(active, rz / jnp.where(active, pap, 1.0), 0.0)
        x = axpy(alpha, p, x)
        r = axpy(-alpha, ap, r)
        rr_new = dot(r, r)
        z = prec(r)
        rz_new = dot(r, z)
        beta = jnp.where(active, rz_new / jnp.where(active, rz, 1.0), 0.0)
        p = axpy(beta, p, z)
        return k + 1, x, r, p, jnp.where(active, rz_new, rz), jnp.where(active, rr_new, rr), alive

    alive0 = jnp.ones(rr.shape, bool)
    _, x, *_ = jax.lax.while_loop(cond, body, (0, x, b, z, rz, rr, alive0))
    return x
