"""Weight-space Hessians of a network's loss ``L(theta)`` and equilibrated energy ``F*(theta)``.

:func:`energy_hessian` offers three methods:

``"theory"``
    The Hessian of the closed-form ``F*`` of Theorem 1 (linear MLPs without biases).
``"unrolled"``
    Autodiff through ``T`` Euler inference steps started at the feedforward pass (what the
    paper did): the Hessian of ``F(theta, z_T(theta))``, exact only as ``T -> inf``.
``"implicit"``
    The exact Hessian of the numerical ``F*(theta) = F(theta, z*(theta))`` at the inference
    equilibrium ``z*`` of *any* network, by the implicit function theorem::

        H = F_tt - F_tz F_zz^{-1} F_zt          (t = weights, z = hidden activities)

    valid only where ``dF/dz = 0``: it refuses to run when the inference residual exceeds
    the tolerance. ``F_zz`` is block diagonal over samples; each block is inverted densely
    (small layers; closed-form blocks for MLPs, see :mod:`pclandscape.activity_hessian`) or
    solved by conjugate gradients (matrix-free).

**First-layer reduction.** Every objective here depends on ``W_1`` only through the
first-layer predictions ``U = X W_1^T`` (``N x n_1``). When ``N < d_x`` the dense Hessians are
computed in the coordinates ``(U, W_2, ..., W_L)`` -- the network with ``W_1`` replaced by the
identity, fed ``U`` -- and mapped back with ``H_W1W1 = J^T H_UU J``, ``J = dU/dW_1``. For an
MNIST net this cuts the number of Hessian-vector products from ``784 n_1 + ...`` to
``N n_1 + ...``.

``form="operator"`` returns a :class:`~pclandscape.curvature.HessianOperator` on the full
weight vector instead of a dense matrix, for :func:`~pclandscape.curvature.lanczos`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float

from . import theory
from .activity_hessian import (
    dense_activity_hessian,
    factor_activity_hessian,
    per_sample_flat,
    unflatten_per_sample,
)
from ._linalg import batch_size_for, inv_per_sample, per_sample_cg
from ._autodiff import dense_matrix, hvp_product
from .curvature import HessianOperator
from .errors import DivergenceError, NotAtEquilibriumError
from .kinks import activities_on_kinks
from ._divergence import divergence_message
from .inference import AbstractSolver, Euler, infer
from .inference._infer import infer_compiled, resolve_solver
from .networks import MLP, PCNetwork, is_standard_mlp
from ._energies import per_sample_energies
from .objectives import mse_loss, pc_energy

__all__ = ["energy_hessian", "loss_hessian", "implicit_energy_operator"]

_METHODS = ("theory", "implicit", "unrolled")


# --------------------------------------------------------------------------- coordinates


class _Coords(eqx.Module):
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


def _make_coords(net, x, reduced) -> _Coords:
    if not reduced:
        return _Coords(net, x, False)
    n1 = net.weights[0].shape[0]
    eye = jnp.eye(n1, dtype=net.weights[0].dtype)
    template = MLP.from_weights([eye, *net.weights[1:]], net.activation, net.biases)
    return _Coords(template, x, True)


def _use_reduction(net, x, reduce_first_layer) -> bool:
    if reduce_first_layer == "auto":
        return is_standard_mlp(net) and x.shape[0] < x.shape[1]
    if reduce_first_layer and not is_standard_mlp(net):
        raise ValueError("reduce_first_layer=True needs an MLP predicting W f(z) (its first layer a dense matrix applied to x).")
    return bool(reduce_first_layer)


def _expand(h: Array, x: Array, n1: int) -> Array:
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
    if rank <= _KRON_MAX_RANK:
        coef = jnp.asarray(u[:, :rank] * sv[:rank], h.dtype)  # (N, r)
        basis = jnp.asarray(vt[:rank].reshape(rank, n1, n1), h.dtype)  # (r, n1, n1)
        return _expand_kron(coef, basis, hur, hrr, x)
    return _expand_matmul(jnp.asarray(blocks), hur, hrr, x)


_KRON_MAX_RANK = 4


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


# --------------------------------------------------------------------------- autodiff objectives


class _Objective(eqx.Module):
    """``flat phi -> objective(net, inputs, y)``; every array is a field (traced, not a constant)."""

    objective: Callable = eqx.field(static=True)
    coords: _Coords
    unravel: Callable = eqx.field(static=True)
    y: Array

    def __call__(self, v):
        net, xx = self.coords.build(self.unravel(v))
        return self.objective(net, xx, self.y)


def _loss_objective(net, xx, y):
    return mse_loss(net, xx, y)


def _theory_objective(net, xx, y):
    return theory.network_equilibrated_energy(net, xx, y)


class _UnrolledObjective(eqx.Module):
    """``F(theta, z_T(theta))`` after the Euler steps of ``solver`` from the feedforward pass."""

    solver: Euler

    def __call__(self, net, xx, y):
        z, _ = self.solver.solve(net, xx, y, net.feedforward(xx)[:-1])
        return pc_energy(net, z, xx, y)


def _objective_operator(objective, net, x, y, reduced) -> HessianOperator:
    coords = _make_coords(net, x, reduced)
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
_ONE_OFF = {"compiler_options": {"xla_backend_optimization_level": 0}}


def _objective_dense(objective, net, x, y, reduced, batch_size):
    probe = lambda v: _objective_operator(objective, net, x, y, reduced).mv(v)
    size = _objective_operator_size(net, x, reduced)
    batch_size = batch_size_for(probe, (jnp.zeros((size,), jnp.result_type(x)),), batch_size)
    h = _objective_dense_coords(objective, net, x, y, reduced, batch_size)
    return _expand(h, x, net.weights[0].shape[0]) if reduced else h


def _objective_operator_size(net, x, reduced) -> int:
    sizes = [int(w.size) for w in net.weights]
    return (x.shape[0] * net.weights[0].shape[0] + sum(sizes[1:])) if reduced else sum(sizes)


@eqx.filter_jit(**_ONE_OFF)
def _objective_dense_coords(objective, net, x, y, reduced, batch_size):
    return dense_matrix(_objective_operator(objective, net, x, y, reduced), batch_size)


@eqx.filter_jit
def _objective_operator_jit(objective, net, x, y):
    return _objective_operator(objective, net, x, y, False)


# --------------------------------------------------------------------------- implicit


class _DenseInverse(eqx.Module):
    """Per-sample inverses of dense activity Hessians, ``(N, m, m)``."""

    inv: Array

    def solve(self, b):
        # one batched matmul per product (LAPACK solves inside the lax.map that forms dense
        # Hessians were seen to deadlock XLA:CPU)
        sol = jnp.einsum("nij,nj->ni", self.inv, per_sample_flat(b))
        return unflatten_per_sample(sol, b)


class _ImplicitArgs(eqx.Module):
    coords: _Coords
    unravel: Callable = eqx.field(static=True)
    phi: Array
    z: tuple
    y: Array
    activity: Any  # BlockTridiagonalInverse | _DenseInverse | None (conjugate gradients)
    cg_rtol: float = eqx.field(static=True)
    cg_max_steps: int = eqx.field(static=True)


def _energy_sum(args: _ImplicitArgs, phi_flat, z):
    net, xx = args.coords.build(args.unravel(phi_flat))
    return jnp.sum(per_sample_energies(net, z, xx, args.y))


def _grad_z(args, phi_flat, z):
    return jax.grad(_energy_sum, argnums=2)(args, phi_flat, z)


def _solve_activity(args: _ImplicitArgs, b):
    """Solve ``(d^2 E / dz^2) w = b``; ``E = sum_i F_i`` is block diagonal over samples."""
    if args.activity is not None:
        return args.activity.solve(b)
    matvec = lambda t: jax.jvp(lambda zz: _grad_z(args, args.phi, zz), (args.z,), (t,))[1]
    return per_sample_cg(matvec, b, args.cg_rtol, args.cg_max_steps)


def _implicit_mv(args: _ImplicitArgs, v):
    """``H v = F_tt v - F_tz F_zz^{-1} F_zt v`` at ``(phi, z*)``, with ``F = E / N``."""
    n = args.y.shape[0]
    b = jax.jvp(lambda p: _grad_z(args, p, args.z), (args.phi,), (v,))[1]
    w = _solve_activity(args, b)
    grad_t = lambda p, zz: jax.grad(_energy_sum, argnums=1)(args, p, zz) / n
    neg_w = jax.tree_util.tree_map(jnp.negative, w)
    return jax.jvp(grad_t, (args.phi, args.z), (v, neg_w))[1]


class _Settings(eqx.Module):
    """Static settings of the implicit Hessian: how activity systems are solved."""

    solve: str = eqx.field(static=True)  # "block" | "dense" | "cg"
    shared: bool = eqx.field(static=True)  # one activity Hessian for all samples (linear, no NaN)
    cg_rtol: float = eqx.field(static=True)
    cg_max_steps: int = eqx.field(static=True)


def _implicit_operator(net, x, y, z, reduced, settings: _Settings) -> HessianOperator:
    coords = _make_coords(net, x, reduced)
    flat, unravel = ravel_pytree(coords.phi(net))
    activity = None
    if len(z) and settings.solve != "cg":
        net_c, xx = coords.build(unravel(flat))
        if settings.solve == "block":
            activity = factor_activity_hessian(net_c, z, xx, y, shared=settings.shared)
        else:
            activity = _DenseInverse(inv_per_sample(dense_activity_hessian(net_c, z, xx, y)))
    args = _ImplicitArgs(coords, unravel, flat, tuple(z), y, activity, settings.cg_rtol, settings.cg_max_steps)
    return HessianOperator(fn=_implicit_mv, args=args, size=int(flat.size), dtype=flat.dtype)


@eqx.filter_jit
def _implicit_operator_jit(net, x, y, z, settings):
    return _implicit_operator(net, x, y, z, False, settings)


@eqx.filter_jit(**_ONE_OFF)
def _implicit_dense_coords(net, x, y, solver, reduced, settings, batch_size):
    """Inference, then the dense implicit Hessian in the Hessian coordinates, as one program
    (compiled once, at low optimisation: see ``_ONE_OFF``). Returns ``(Equilibrium, H)``."""
    eq = infer_compiled(net, x, y, solver, None)
    return eq, dense_matrix(_implicit_operator(net, x, y, eq.activities, reduced, settings), batch_size)


def _implicit_dense(net, x, y, solver, tol, linear_solve, reduced, batch_size):
    solver = resolve_solver(net, y, solver)
    settings = _implicit_settings(net, x, y, linear_solve, None)
    eq, h = _implicit_dense_coords(net, x, y, solver, reduced, settings, batch_size)
    _check_equilibrium(net, eq, solver, tol)  # the formula holds only there: refuse otherwise
    return _expand(h, x, net.weights[0].shape[0]) if reduced else h


def _activity_size(net, x) -> int:
    """Hidden activities per sample (the size of one diagonal block of ``F_zz``)."""
    shapes = jax.eval_shape(net.feedforward, x)[:-1]
    return int(sum(np.prod(s.shape[1:]) for s in shapes))


def _equilibrium(net, x, y, solver, tol):
    solver = resolve_solver(net, y, solver)
    eq = infer(net, x, y, solver)
    _check_equilibrium(net, eq, solver, tol)
    return eq


def _check_equilibrium(net, eq, solver, tol) -> None:
    if not bool(jnp.isfinite(eq.energy)):
        raise DivergenceError(divergence_message(solver, float(eq.energy), int(eq.steps)))
    tol = eq.tol if tol is None else tol
    if not float(eq.grad_norm) <= tol:
        raise NotAtEquilibriumError(
            f"inference residual ||dF/dz|| = {float(eq.grad_norm):.3g} exceeds tol = {tol:g}: the "
            f"implicit Hessian H = F_tt - F_tz F_zz^-1 F_zt holds only at an equilibrium. Use a "
            f"solver that converges (pcl.ExactLinear() for linear nets, pcl.Newton(tol=...) for "
            f"nonlinear ones) or pass a larger tol."
        )
    on_kinks = int(activities_on_kinks(net, eq.activities))
    if on_kinks:
        raise NotAtEquilibriumError(
            f"{on_kinks} activities of this equilibrium sit exactly at the kink of "
            f"{net.activation_name} (z = 0), where the energy is not twice differentiable: the "
            f"implicit Hessian (implicit function theorem) does not exist there. Use the loss "
            f"Hessian, or a smooth activation such as 'tanh'."
        )


def _implicit_settings(net, x, y, linear_solve, cg_rtol, cg_max_steps=500) -> _Settings:
    """How the activity systems are solved."""
    if linear_solve not in ("auto", "block", "dense", "cg"):
        raise ValueError(f"linear_solve={linear_solve!r} must be 'auto', 'block', 'dense' or 'cg'.")
    if linear_solve == "block" and not is_standard_mlp(net):
        raise ValueError("linear_solve='block' needs an MLP; use 'dense' or 'cg' for this network.")
    if linear_solve == "auto":
        m = _activity_size(net, x)
        linear_solve = "block" if is_standard_mlp(net) else ("dense" if m <= 1024 else "cg")
    shared = isinstance(net, MLP) and net.is_linear and not bool(np.isnan(np.asarray(y)).any())
    rtol = float(cg_rtol if cg_rtol is not None else 100 * jnp.finfo(jnp.result_type(x)).eps)
    return _Settings(linear_solve, shared, rtol, int(cg_max_steps))


def implicit_energy_operator(
    net: PCNetwork,
    x: Array,
    y: Array,
    *,
    solver: AbstractSolver | None = None,
    tol: float | None = None,
    linear_solve: str = "auto",
    cg_rtol: float | None = None,
    cg_max_steps: int = 500,
) -> HessianOperator:
    """The exact Hessian of the numerical ``F*`` at the equilibrium, as a matrix-free operator.

    Runs inference with ``solver`` (raising :class:`NotAtEquilibriumError` for a residual
    above ``tol``), then returns a :class:`~pclandscape.curvature.HessianOperator` on the
    flat weights whose product is ``F_tt v - F_tz F_zz^{-1} F_zt v``. ``linear_solve``:
    ``"dense"`` (per-sample inverse of the activity Hessian, formed once), ``"cg"``
    (matrix-free conjugate gradients in every product, to ``cg_rtol``) or ``"auto"`` (dense
    when a sample has at most 1024 activities).
    """
    net.check_data(x, y)
    _check_finite(net, x, y)
    eq = _equilibrium(net, x, y, solver, tol)
    settings = _implicit_settings(net, x, y, linear_solve, cg_rtol, cg_max_steps)
    return _implicit_operator_jit(net, x, y, tuple(eq.activities), settings)


# --------------------------------------------------------------------------- public


def _check_finite(net, x, y) -> None:
    """Hessians at NaN/inf weights or inputs are NaN: refuse them with the reason. Targets may
    hold NaN (unobserved entries), never inf."""
    bad = [name for name, ok in (
        ("weights", all(bool(jnp.all(jnp.isfinite(w))) for w in net.weights)),
        ("inputs x", bool(jnp.all(jnp.isfinite(x)))),
        ("targets y", not bool(jnp.any(jnp.isinf(y)))),
    ) if not ok]
    if bad:
        raise ValueError(f"the {' and '.join(bad)} hold NaN or inf: a Hessian there is NaN. Check them (a diverged "
                         f"training run?).")


def _check_form(form):
    if form not in ("dense", "operator"):
        raise ValueError(f"form={form!r} must be 'dense' or 'operator'.")


def loss_hessian(
    net: PCNetwork,
    x: Float[Array, "N ..."],
    y: Float[Array, "N dy"],
    *,
    form: str = "dense",
    reduce_first_layer: bool | str = "auto",
    batch_size: int | None = None,
):
    """Hessian of the MSE loss (Eq 1) with respect to the weights ``W_1..W_L``.

    Returns a dense ``(p, p)`` matrix in the order of docs/conventions.md (``form="dense"``, with the
    first-layer reduction when it pays) or a :class:`~pclandscape.curvature.HessianOperator`
    (``form="operator"``). The dense form is computed eagerly (call it outside ``jax.jit``).
    """
    net.check_data(x, y)
    _check_finite(net, x, y)
    _check_form(form)
    if form == "operator":
        return _objective_operator_jit(_loss_objective, net, x, y)
    return _objective_dense(_loss_objective, net, x, y, _use_reduction(net, x, reduce_first_layer), batch_size)


def energy_hessian(
    net: PCNetwork,
    x: Float[Array, "N ..."],
    y: Float[Array, "N dy"],
    method: str = "implicit",
    *,
    solver: AbstractSolver | None = None,
    tol: float | None = None,
    form: str = "dense",
    linear_solve: str = "auto",
    reduce_first_layer: bool | str = "auto",
    batch_size: int | None = None,
):
    """Hessian of the equilibrated energy ``F*(theta)`` with respect to ``W_1..W_L``.

    Args:
        net: the network (``"theory"`` needs a linear MLP without biases).
        x, y: the batch.
        method: ``"implicit"`` (exact at the numerical equilibrium, any network),
            ``"theory"`` (closed form, Theorem 1) or ``"unrolled"`` (autodiff through the
            Euler steps of ``solver``, default ``Euler(dt=0.1, steps=50)`` as in the paper).
        solver: inference solver for ``"implicit"`` (default
            :func:`~pclandscape.default_solver`) or the Euler unrolled by ``"unrolled"``.
        tol: largest inference residual ``max_i ||dF_i/dz_i||`` accepted by ``"implicit"``
            (default: the solver's ``tol``); above it :class:`NotAtEquilibriumError`.
        form: ``"dense"`` for a ``(p, p)`` matrix or ``"operator"`` for a matrix-free
            :class:`~pclandscape.curvature.HessianOperator` (for Lanczos).
        linear_solve: activity solves of ``"implicit"``: ``"block"``, ``"dense"``, ``"cg"``
            or ``"auto"`` (see :func:`implicit_energy_operator`).
        reduce_first_layer: use the ``U = X W_1^T`` coordinates for dense Hessians
            (``"auto"``: when ``N < d_x`` for an MLP).
        batch_size: Hessian-vector products evaluated at once when forming a dense Hessian
            (``None``: as many as keep ``batch_size * p <= 2**24``, at least 64).

    Returns:
        ``(p, p)`` array in the order of docs/conventions.md, or a ``HessianOperator``. The dense form is
        computed eagerly (inference residual checked on the host): call it outside ``jax.jit``.
    """
    net.check_data(x, y)
    _check_finite(net, x, y)
    if method not in _METHODS:
        raise ValueError(f"method={method!r} is not known; use one of {list(_METHODS)}.")
    _check_form(form)
    reduced = form == "dense" and _use_reduction(net, x, reduce_first_layer)
    if method == "implicit":
        if form == "dense":
            return _implicit_dense(net, x, y, solver, tol, linear_solve, reduced, batch_size)
        return implicit_energy_operator(net, x, y, solver=solver, tol=tol, linear_solve=linear_solve)
    if method == "theory":
        if not (isinstance(net, MLP) and net.is_linear and net.biases is None):
            raise ValueError(
                "method='theory' needs a linear MLP without biases (Theorem 1); use "
                "method='implicit' for other networks."
            )
        objective = _theory_objective
    else:
        solver = Euler() if solver is None else solver
        if not isinstance(solver, Euler):
            raise ValueError(f"method='unrolled' differentiates through Euler steps; got solver={solver!r}.")
        objective = _UnrolledObjective(solver)
    if form == "operator":
        return _objective_operator_jit(objective, net, x, y)
    return _objective_dense(objective, net, x, y, reduced, batch_size)
