"""Autodiff building blocks shared by the curvature, Hessian, landscape and critical-point
modules: functions of the flat parameter vector, dense matrices from matrix-vector products,
Hessian-vector products."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

from ._checks import check_dense_fits

__all__ = ["FlatFunction", "flatten_fn", "dense_matrix", "MATRIX_FREE", "hvp_product", "jit_grad", "jit_value_and_grad"]


MATRIX_FREE = ("Use the matrix-free operator instead (pcl.loss_hessian_operator, pcl.energy_hessian_operator or "
               "pcl.hessian_operator; pcl.lanczos(op, k) for its extreme eigenvalues, op.mv(v) for products), or a "
               "smaller network.")


def dense_matrix(op, batch_size: int | None):
    """``(p, p)`` matrix of ``op`` from products with the unit vectors, ``batch_size`` at a time
    (``None``: as many as keep ``batch_size * p`` under ``2**24``, at least 64); refused with a
    ``MemoryError`` up front when it cannot fit in the device's memory.

    The columns are split into equal batches (the last padded with repeats, then dropped) so
    that the product is traced and compiled once, not once more for a remainder batch."""
    check_dense_fits(op.size, op.dtype, "Hessian", MATRIX_FREE)
    return _dense_matrix(op, batch_size)


@eqx.filter_jit
def _dense_matrix(op, batch_size: int | None):
    n = op.size
    if batch_size is None:
        batch_size = max(64, 2**24 // n)
    k = -(-n // max(1, min(batch_size, n)))  # number of batches
    b = -(-n // k)  # columns per batch
    eye_col = lambda i: op.mv(jnp.zeros((n,), op.dtype).at[i].set(1))
    if k == 1:  # one batch: no loop to compile
        cols = jax.vmap(eye_col)(jnp.arange(n))
    else:
        idx = jnp.minimum(jnp.arange(k * b), n - 1).reshape(k, b)
        cols = jax.lax.map(jax.vmap(eye_col), idx).reshape(k * b, n)[:n]
    return 0.5 * (cols + cols.T)  # rows are H e_i; symmetrise the rounding


class FlatFunction(eqx.Module):
    """``fn`` as a function of the flat parameter vector.

    The arrays ``fn`` closes over are hoisted into ``consts`` (``jax.closure_convert``), so
    that jit traces them as arguments instead of baking them in as (slow to compile)
    constants.
    """

    fn: Callable = eqx.field(static=True)
    consts: list
    unravel: Callable = eqx.field(static=True)

    def __call__(self, v):
        return self.fn(v, *self.consts)


def flatten_fn(fn, params) -> tuple["FlatFunction", Array]:
    """``fn`` of a pytree as a :class:`FlatFunction` of the flat vector, and that vector.

    ``fn`` must return a scalar (every caller differentiates or tabulates an objective); a
    ``ValueError`` names the shape it returned otherwise. The check reads the output of the
    one trace ``closure_convert`` makes anyway.
    """
    flat, unravel = ravel_pytree(params)
    shapes = []

    def of_flat(v):
        out = fn(unravel(v))
        shapes.append(jnp.shape(out))
        return out

    converted, consts = jax.closure_convert(of_flat, flat)
    if shapes and shapes[0] != ():
        raise ValueError(
            f"fn returned an array of shape {shapes[0]}, not a scalar: pass the objective itself (reduce the "
            f"output, e.g. with jnp.sum or jnp.mean, or use the batch-mean loss / energy)."
        )
    return FlatFunction(converted, list(consts), unravel), flat


def hvp_product(args, v):
    """Forward-over-reverse Hessian-vector product of ``args = (f, flat)``."""
    f, flat = args
    return jax.jvp(jax.grad(f), (flat,), (v,))[1]


@eqx.filter_jit
def jit_grad(f, flat):
    """``grad f`` at ``flat``, compiled."""
    return jax.grad(f)(flat)


@eqx.filter_jit
def jit_value_and_grad(f, flat):
    """``(f, grad f)`` at ``flat``, compiled."""
    return jax.value_and_grad(f)(flat)
