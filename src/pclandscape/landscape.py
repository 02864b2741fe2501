"""1-D and 2-D slices of any objective through parameter space, and the directions to slice along.

``slice_2d(fn, params, (d1, d2), span, resolution)`` evaluates
``fn(params + a d1 + b d2)`` on a grid (vectorised with ``vmap``), ready for
``plt.contourf(s.alphas, s.betas, s.values)``. Directions are pytrees shaped like
``params`` or flat vectors. Following §A.4 (and Böttcher & Wheeler), the directions for a
saddle are the Hessian's extreme eigenvectors (:func:`hessian_directions`): random
directions (:func:`random_direction`, filter-normalised as in Li et al.) can miss saddles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PyTree

from ._linalg import batch_size_for
from ._autodiff import flatten_fn
from .curvature import hessian_operator, lanczos

__all__ = ["Slice1D", "Slice2D", "slice_1d", "slice_2d", "hessian_directions", "random_direction"]


class Slice1D(NamedTuple):
    """``values[i] = fn(params + alphas[i] * direction)``."""

    alphas: np.ndarray
    values: np.ndarray


class Slice2D(NamedTuple):
    """``values[j, i] = fn(params + alphas[i] d1 + betas[j] d2)`` (rows follow ``betas``,
    as ``plt.contourf(alphas, betas, values)`` expects)."""

    alphas: np.ndarray
    betas: np.ndarray
    values: np.ndarray


def _flat_dir(direction, size, dtype):
    if isinstance(direction, (jax.Array, np.ndarray)) and jnp.ndim(direction) == 1 and jnp.size(direction) == size:
        return jnp.asarray(direction, dtype)
    d, _ = ravel_pytree(direction)
    if d.size != size:
        raise ValueError(f"direction has {d.size} entries but params has {size}.")
    return jnp.asarray(d, dtype)


def _span(span):
    if isinstance(span, (int, float)):
        return (-float(span), float(span))
    lo, hi = span
    return float(lo), float(hi)


@eqx.filter_jit
def _eval_grid(f, flat, dirs, coords, batch_size):
    def one(c):
        return f(flat + c @ dirs)

    return jax.lax.map(one, coords, batch_size=batch_size)


def slice_1d(
    fn: Callable[[PyTree], Array],
    params: PyTree,
    direction,
    span=(-1.0, 1.0),
    resolution: int = 51,
    *,
    batch_size: int = 64,
) -> Slice1D:
    """``fn`` along ``params + alpha * direction`` for ``alpha`` in ``span`` (``resolution`` points)."""
    f, flat = flatten_fn(fn, params)
    d = _flat_dir(direction, flat.size, flat.dtype)
    alphas = np.linspace(*_span(span), resolution)
    batch_size = batch_size_for(f, (flat,), batch_size)
    vals = _eval_grid(f, flat, d[None], jnp.asarray(alphas, flat.dtype)[:, None], batch_size)
    return Slice1D(alphas, np.asarray(vals))


def slice_2d(
    fn: Callable[[PyTree], Array],
    params: PyTree,
    directions,
    span=(-1.0, 1.0),
    resolution: int | tuple[int, int] = 30,
    *,
    batch_size: int = 64,
) -> Slice2D:
    """``fn`` on the plane ``params + a d1 + b d2`` (the paper's 30 x 30 landscapes).

    Args:
        fn: scalar objective of ``params`` (e.g. the loss, or the numerical ``F*`` via
            ``pcl.equilibrated_energy``; any jit/vmap-compatible function).
        params: the centre of the slice.
        directions: ``(d1, d2)``, each a pytree like ``params`` or a flat vector.
        span: ``s`` for ``[-s, s]``, ``(lo, hi)`` for both axes, or ``((lo1, hi1), (lo2, hi2))``.
        resolution: points per axis, or ``(n_alpha, n_beta)``.
        batch_size: grid points evaluated at once (``vmap`` in chunks of this size).
    """
    if len(directions) != 2:
        raise ValueError("directions must be a pair (d1, d2).")
    f, flat = flatten_fn(fn, params)
    d = jnp.stack([_flat_dir(v, flat.size, flat.dtype) for v in directions])
    if isinstance(span, (tuple, list)) and len(span) == 2 and isinstance(span[0], (tuple, list)):
        sa, sb = _span(span[0]), _span(span[1])
    else:
        sa = sb = _span(span)
    ra, rb = (resolution, resolution) if isinstance(resolution, int) else resolution
    alphas, betas = np.linspace(*sa, ra), np.linspace(*sb, rb)
    aa, bb = np.meshgrid(alphas, betas)
    coords = jnp.asarray(np.stack([aa.ravel(), bb.ravel()], 1), flat.dtype)
    batch_size = batch_size_for(f, (flat,), batch_size)
    vals = _eval_grid(f, flat, d, coords, batch_size)
    return Slice2D(alphas, betas, np.asarray(vals).reshape(rb, ra))


def hessian_directions(fn: Callable[[PyTree], Array], params: PyTree, *, dense_max: int = 4096):
    """Unit eigenvectors ``(v_min, v_max)`` of the Hessian of ``fn`` at ``params``, shaped like ``params``.

    Dense ``eigh`` for ``p <= dense_max``, Lanczos otherwise. For a zero Hessian (the loss
    at the origin of a deep network) every direction is an eigenvector; ``eigh`` then
    returns coordinate vectors.
    """
    op = hessian_operator(fn, params)
    unravel = op.args[0].unravel
    if op.size <= dense_max:
        _, v = jnp.linalg.eigh(op.as_matrix())
        return unravel(v[:, 0]), unravel(v[:, -1])
    lo = lanczos(op, k=1, which="smallest")
    hi = lanczos(op, k=1, which="largest")
    return unravel(lo.eigenvectors[:, 0]), unravel(hi.eigenvectors[:, 0])


def random_direction(key, params: PyTree, normalize: str | None = "filter") -> PyTree:
    """A Gaussian random direction shaped like ``params``.

    ``normalize="filter"`` (Li et al. 2018) rescales each filter -- each row of a weight
    matrix (one output unit), each output channel of a conv kernel -- to the norm of the
    same filter of ``params`` (so it is zero where ``params`` is zero: use ``"layer"`` or
    None at the origin); ``"layer"`` scales each leaf to unit norm; None leaves it as drawn.
    """
    if normalize not in ("filter", "layer", None):
        raise ValueError(f"normalize={normalize!r} must be 'filter', 'layer' or None.")
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    out = []
    for k, w in zip(keys, leaves):
        w = jnp.asarray(w)
        d = jax.random.normal(k, w.shape, w.dtype)
        if normalize == "layer":
            d = d / jnp.linalg.norm(d)
        elif normalize == "filter":
            if w.ndim <= 1:
                d = d / jnp.linalg.norm(d) * jnp.linalg.norm(w)
            else:
                axes = tuple(range(1, w.ndim))
                d = d / jnp.linalg.norm(d, axis=axes, keepdims=True) * jnp.linalg.norm(w, axis=axes, keepdims=True)
        out.append(d)
    return jax.tree_util.tree_unflatten(treedef, out)
