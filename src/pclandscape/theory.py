"""Closed forms for deep linear networks (the paper's theory, §3 and §A.3).

All functions take the weights ``[W_1, ..., W_L]`` (``W_l`` of shape ``(n_l, n_{l-1})``)
and data ``x: (N, d_x)``, ``y: (N, d_y)``. Empirical covariances follow the paper:
``Sigma_xy = 1/N sum_i x_i y_i^T`` etc.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Float

__all__ = ["rescaling", "equilibrated_energy", "product"]


def _check_weights(weights: Sequence[Array]) -> list[Array]:
    ws = [jnp.asarray(w) for w in weights]
    if not ws:
        raise ValueError("weights is empty; pass [W_1, ..., W_L].")
    for i, w in enumerate(ws):
        if w.ndim != 2:
            raise ValueError(f"weights[{i}] has shape {w.shape}; each W_l must be a 2-D (out, in) matrix.")
        if i and w.shape[1] != ws[i - 1].shape[0]:
            raise ValueError(
                f"weights[{i}] has shape {w.shape} but weights[{i - 1}] has {ws[i - 1].shape}: "
                f"W_{i + 1} must have {ws[i - 1].shape[0]} columns."
            )
    return ws


def _check_xy(ws: list[Array], x: Array, y: Array) -> None:
    if jnp.ndim(x) != 2 or jnp.shape(x)[1] != ws[0].shape[1]:
        raise ValueError(f"x has shape {jnp.shape(x)}; expected (N, {ws[0].shape[1]}) to match W_1.")
    if jnp.ndim(y) != 2 or jnp.shape(y)[1] != ws[-1].shape[0]:
        raise ValueError(f"y has shape {jnp.shape(y)}; expected (N, {ws[-1].shape[0]}) to match W_L.")
    if jnp.shape(x)[0] != jnp.shape(y)[0]:
        raise ValueError(f"x and y have different batch sizes ({jnp.shape(x)[0]} and {jnp.shape(y)[0]}).")


def product(weights: Sequence[Array], k: int | None = None, l: int = 1) -> Array:
    """``W_{k:l} = W_k W_{k-1} ... W_l`` (1-indexed, inclusive); ``k`` defaults to ``L``.

    For ``k < l`` this is the identity of size ``n_{l-1}`` (an empty product).
    """
    ws = _check_weights(weights)
    k = len(ws) if k is None else k
    out = jnp.eye(ws[l - 2].shape[0] if l > 1 else ws[0].shape[1], dtype=ws[0].dtype)
    for i in range(l, k + 1):
        out = ws[i - 1] @ out
    return out


@jax.jit
def rescaling(weights: Sequence[Float[Array, "out in"]]) -> Float[Array, "dy dy"]:
    """The rescaling of Theorem 1: ``S = I_{d_y} + sum_{l=2}^{L} W_{L:l} W_{L:l}^T``.

    ``S`` is the covariance of the output that the hierarchical Gaussian model of PC
    implies (Eq 30).
    """
    ws = _check_weights(weights)
    d_y = ws[-1].shape[0]
    s = jnp.eye(d_y, dtype=ws[0].dtype)
    m = jnp.eye(d_y, dtype=ws[0].dtype)  # W_{L:l}, built from l = L downwards
    for l in range(len(ws), 1, -1):
        m = m @ ws[l - 1]
        s = s + m @ m.T
    return s


@jax.jit
def equilibrated_energy(
    weights: Sequence[Float[Array, "out in"]], x: Float[Array, "N dx"], y: Float[Array, "N dy"]
) -> Float[Array, ""]:
    """Theorem 1 (Eq 5): ``F* = 1/(2N) sum_i r_i^T S^{-1} r_i``, ``r_i = y_i - W_{L:1} x_i`` (contract).

    The PC energy of a deep linear network at the exact inference equilibrium.
    """
    ws = _check_weights(weights)
    _check_xy(ws, x, y)
    r = y - x @ product(ws).T
    s = rescaling(ws)
    sol = jsl.cho_solve(jsl.cho_factor(s, lower=True), r.T)
    return 0.5 * jnp.mean(jnp.sum(r.T * sol, axis=0))
