"""Hessians of autodiff objectives (the loss, Theorem 1's closed form, unrolled inference) in
the Hessian coordinates: operators and dense matrices."""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array

from .. import theory
from .._autodiff import dense_matrix, hvp_product
from .._linalg import batch_size_for
from ..curvature import HessianOperator
from ..inference import Euler
from ..objectives import mse_loss, pc_energy
from ._coords import Coords, expand, make_coords

__all__ = ["loss_objective", "theory_objective", "UnrolledObjective", "objective_operator_jit", "objective_dense",
           "ONE_OFF"]


class _Objective(eqx.Module):
    """``flat phi -> objective(net, inputs, y)``; every array is a field (traced, not a constant)."""

    objective: Callable = eqx.field(static=True)
    coords: Coords
    unravel: Callable = eqx.field(static=True)
    y: Array

    def __call__(self, v):
        net, xx = self.coords.build(self.unravel(v))
        return self.objective(net, xx, self.y)


def loss_objective(net, xx, y):
    return mse_loss(net, xx, y)


def theory_objective(net, xx, y):
    return theory.network_equilibrated_energy(net, xx, y)


class UnrolledObjective(eqx.Module):
    """``F(theta, z_T(theta))`` after the Euler steps of ``solver`` from the feedforward pass."""

    solver: Euler

    def __call__(self, net, xx, y):
        z, _ = self.solver.solve(net, xx, y, net.feedforward(xx)[:-1])
        return pc_energy(net, z, xx, y)


def _objective_operator(objective, net, x, y, reduced) -> HessianOperator:
    coords = make_coords(net, x, reduced)
    flat, unravel = ravel_pytree(coords.phi(net))
    f = _Objective(objective, coords, unravel, y)
    return HessianOperator(fn=hvp_product, args=(f, flat), size=int(flat.size), dtype=flat.dtype)


# Dense Hessians are one-off computations whose run time is dominated by library matrix
# products; LLVM's optimisation passes then cost more compile time than they save (measured:
# first call 3.1 s -> 2.2 s, later calls 1.33 s -> 1.46 s for an MNIST 784-10-10-10 net). The
# implicit method compiles its inference into the same program; dense Hessians are only
# formed for small nets, whose inference loops are cheap even unoptimised. The expansion to
# the full first layer (element-wise work on a (p, p) matrix) is compiled normally.
# Dense Hessians are formed eagerly (host-side checks and the expansion's rank split): call
# them outside jax.jit; the operator form is the one to use inside traced code.
ONE_OFF = {"compiler_options": {"xla_backend_optimization_level": 0}}


def objective_dense(objective, net, x, y, reduced, batch_size):
    probe = lambda v: _objective_operator(objective, net, x, y, reduced).mv(v)
    size = _objective_operator_size(net, x, reduced)
    batch_size = batch_size_for(probe, (jnp.zeros((size,), jnp.result_type(x)),), batch_size)
    h = _objective_dense_coords(objective, net, x, y, reduced, batch_size)
    return expand(h, x, net.weights[0].shape[0]) if reduced else h


def _objective_operator_size(net, x, reduced) -> int:
    sizes = [int(w.size) for w in net.weights]
    return (x.shape[0] * net.weights[0].shape[0] + sum(sizes[1:])) if reduced else sum(sizes)


@eqx.filter_jit(**ONE_OFF)
def _objective_dense_coords(objective, net, x, y, reduced, batch_size):
    return dense_matrix(_objective_operator(objective, net, x, y, reduced), batch_size)


@eqx.filter_jit
def objective_operator_jit(objective, net, x, y):
    return _objective_operator(objective, net, x, y, False)
