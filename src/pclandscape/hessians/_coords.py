"""Hessian coordinates and the first-layer reduction ``U = X W_1^T`` (see :mod:`pclandscape.hessians`)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ..networks import MLP, PCNetwork, is_standard_mlp

__all__ = ["Coords", "make_coords", "use_reduction", "expand", "KRON_MAX_RANK"]


class Coords(eqx.Module):
    """Hessian coordinates ``phi`` and the map ``phi -> (network, inputs)``.

    Full: ``phi = [W_1, ..., W_L]``. Reduced: ``phi = [U, W_2, ..., W_L]`` with
    ``U = X W_1^T``, evaluated by the same network with ``W_1`` replaced by the identity and
    fed ``U`` (its first layer then predicts ``U``, as the original predicts ``X W_1^T``).
    """

    template: PCNetwork
    x: Array
    reduced: bool = eqx.field(static=True)

    def phi(self, net) -> list:
        if self.reduced:
            return [self.x @ net.weights[0].T, *net.weights[1:]]
        return list(net.weights)

    def build(self, phi):
        if self.reduced:
            return self.template.with_weights([self.template.weights[0], *phi[1:]]), phi[0]
        return self.template.with_weights(phi), self.x


def make_coords(net, x, reduced) -> Coords:
    if not reduced:
        return Coords(net, x, False)
    n1 = net.weights[0].shape[0]
    eye = jnp.eye(n1, dtype=net.weights[0].dtype)
    template = MLP.from_weights([eye, *net.weights[1:]], net.activation, net.biases)
    return Coords(template, x, True)


def use_reduction(net, x, reduce_first_layer) -> bool:
    if reduce_first_layer == "auto":
        return is_standard_mlp(net) and x.shape[0] < x.shape[1]
    if reduce_first_layer and not is_standard_mlp(net):
        raise ValueError("reduce_first_layer=True needs an MLP predicting W f(z) (its first layer a dense matrix applied to x).")
    return bool(reduce_first_layer)


def expand(h: Array, x: Array, n1: int) -> Array:
    """Map a Hessian in ``(U, W_2..W_L)`` coordinates to ``(W_1, W_2..W_L)`` (the order of docs/conventions.md).

    ``U = X W_1^T`` is linear in ``W_1``, so ``H_W1W1 = J^T H_UU J`` and ``H_W1R = J^T H_UR``:
    ``H_W1W1[(a,b),(c,d)] = sum_ij X[i,b] H_UU[(i,a),(j,c)] X[j,d]``. Each sample's ``U_i``
    enters only its own term of the batch mean, so ``H_UU`` is block diagonal over samples,
    with blocks ``D_i`` ``(n_1, n_1)``, and ``H_W1W1 = sum_i D_i (x) x_i x_i^T``.

    The ``N`` blocks often span few dimensions (one for a linear net, whose ``D_i`` are all
    equal): with the numerical rank ``r`` of the ``(N, n_1^2)`` matrix of blocks,
    ``D_i = sum_k c_ik B_k``, and ``H_W1W1 = sum_k B_k (x) (X^T diag(c_k) X)`` is ``r``
    Kronecker products, written in one pass. For larger ``r`` it is one
    ``(n_1 d_x n_1, N) x (N, d_x)`` matrix product. The split of the blocks (an SVD of an
    ``N x n_1^2`` matrix) runs on the host; dropped singular values are below
    ``max(N, n_1^2) * eps`` times the largest, i.e. at the rounding level of ``h``.
    """
    n, d_x = x.shape
    ku = n * n1
    hn = np.asarray(h)
    blocks = hn[:ku, :ku].reshape(n, n1, n, n1)[np.arange(n), :, np.arange(n), :]  # (N, n1, n1)
    u, sv, vt = np.linalg.svd(blocks.reshape(n, n1 * n1), full_matrices=False)
    rank = int(np.sum(sv > max(n, n1 * n1) * np.finfo(hn.dtype).eps * sv[0])) if sv[0] > 0 else 0
    hur, hrr = h[:ku, ku:].reshape(n, n1, -1), h[ku:, ku:]
    if rank <= KRON_MAX_RANK:
        coef = jnp.asarray(u[:, :rank] * sv[:rank], h.dtype)  # (N, r)
        basis = jnp.asarray(vt[:rank].reshape(rank, n1, n1), h.dtype)  # (r, n1, n1)
        return _expand_kron(coef, basis, hur, hrr, x)
    return _expand_matmul(jnp.asarray(blocks), hur, hrr, x)


KRON_MAX_RANK = 4


def _assemble(h11, hur, hrr, x):
    """``[[H11, H1R], [H1R^T, HRR]]`` written in one pass: the padded ``H11`` (a fusion) with the
    small blocks updated in place (concatenations would copy the ``(p, p)`` matrix twice)."""
    k, r = h11.shape[0], hrr.shape[0]
    h1r = jnp.einsum("ib,iar->abr", x, hur).reshape(k, r)
    out = jnp.pad(h11, ((0, r), (0, r)))
    out = jax.lax.dynamic_update_slice(out, h1r, (0, k))
    out = jax.lax.dynamic_update_slice(out, h1r.T, (k, 0))
    return jax.lax.dynamic_update_slice(out, hrr, (k, k))


@jax.jit
def _expand_kron(coef, basis, hur, hrr, x):
    n1, d_x = basis.shape[1], x.shape[1]
    grams = jnp.einsum("ik,ib,id->kbd", coef, x, x)  # (r, d_x, d_x)
    h11 = jnp.sum(basis[:, :, None, :, None] * grams[:, None, :, None, :], axis=0).reshape(n1 * d_x, n1 * d_x)
    return _assemble(h11, hur, hrr, x)


@jax.jit
def _expand_matmul(blocks, hur, hrr, x):
    (n, n1, _), d_x = blocks.shape, x.shape[1]
    lhs = (blocks[:, :, None, :] * x[:, None, :, None]).reshape(n, n1 * d_x * n1)  # [i, (a, b, c)]
    h11 = (lhs.T @ x).reshape(n1 * d_x, n1 * d_x)  # [(a, b), (c, d)]
    return _assemble(h11, hur, hrr, x)
