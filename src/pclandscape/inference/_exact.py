"""The exact equilibrium of linear MLPs by one direct solve (block-tridiagonal, or in output space)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from .._checks import positive_number
from .._linalg import map_unbatched
from ..networks import MLP
from ._base import AbstractSolver

__all__ = ["ExactLinear"]

_METHODS = ("auto", "activity", "output")


class ExactLinear(AbstractSolver):
    """Exact equilibrium of a deep linear PCN by a direct solve (no iteration).

    For a linear MLP (``f = id``, optional biases) the stationarity conditions
    ``dF_i/dz_l = 0`` of every sample are the linear system, for ``l = 1..H``::

        (I + p_{l+1} M_{l+1}^T M_{l+1}) z_l - M_l z_{l-1} - p_{l+1} M_{l+1}^T z_{l+1}
            = c_l - p_{l+1} M_{l+1}^T c_{l+1}        (z_0 = x, z_L = y)

    with ``M_l``, ``c_l`` the layer's linear map and offset (``MLP.linear_maps``: ``W_l``,
    ``b_l`` in the standard parameterisation; ``a_l W_l (+ I)`` for scaled and residual MLPs)
    and ``p_{l+1}`` the output precision for ``l = H``, else 1.

    whose matrix is symmetric positive definite and block tridiagonal across layers, and
    the same for every sample. It is solved by block Cholesky (Thomas) elimination: the
    Schur complements ``S_l = D_l - W_l S_{l-1}^{-1} W_l^T`` are factorised once
    (``O(L n^3)``) and shared by the whole batch (``O(L n^2 N)``). No iteration.

    Unobserved (NaN) targets free their output units, which changes the last block per
    sample; ``masked=True`` handles that (one extra ``n_H x n_H`` factorisation per sample).
    :func:`infer`, :func:`pclandscape.pc_step` and :func:`pclandscape.train` switch it on
    when the targets contain NaN; under your own ``jit`` pass ``masked=True`` yourself.

    **The output-space route** (``method="output"``). The same equilibrium follows from
    ``d_y`` unknowns per sample instead of ``n_1 + ... + n_H``. Write the hidden errors
    ``e_l = z_l - M_l z_{l-1} - c_l`` as the unknowns; with ``P_l = M_L M_{L-1} ... M_{l+1}``
    (``d_y x n_l``) the output error is ``e_L = r - sum_l P_l e_l``, ``r = y - (forward pass)``,
    and minimising ``1/2 sum_l ||e_l||^2 + p/2 ||e_L||^2`` gives::

        (I + p G) e_L = r,   G = sum_{l=1}^{H} P_l P_l^T,   e_l = p P_l^T e_L,

    (``I + p G = p S``, with Theorem 1's rescaling ``S = I/p + G`` of
    :func:`pclandscape.theory.rescaling`), then ``z_l = M_l z_{l-1} + c_l + e_l``.
    Cost ``O(d_y n^2 L)`` for the weights plus one ``d_y x d_y`` factorisation, against
    ``O(n^3 L)``: for the paper's MLPs (``d_y = 10``, width 500) about 50x fewer operations.
    Masked targets restrict the system to each sample's observed units
    (``(I + p O_i G O_i) u_i = O_i r_i``, ``d_y x d_y`` per sample, against ``n_H x n_H``).
    ``method="auto"`` (default) takes it when ``d_y`` is smaller than every hidden width.
    The two routes are independent computations of one equilibrium (tested against each
    other in float64); checks of Theorem 1 use ``method="activity"``, which does not form
    ``S``.

    Args:
        tol: residual below which the result is reported as converged (a warning sign of
            ill-conditioning if the exact solve misses it).
        masked: targets may contain NaN (missing) entries.
        method: ``"activity"`` (the block-tridiagonal solve), ``"output"`` (the output-space
            route) or ``"auto"`` (the cheaper for the network's shapes).
    """

    tol: float = 1e-4
    masked: bool = eqx.field(default=False, static=True)
    method: str = eqx.field(default="auto", static=True)

    def __check_init__(self):
        positive_number("ExactLinear", "tol", self.tol)
        if self.method not in _METHODS:
            raise ValueError(f"ExactLinear: method={self.method!r} is not known; use one of {', '.join(map(repr, _METHODS))}.")

    def prepare(self, net, y):
        type(self).check(self, net)
        if not self.masked and not isinstance(y, jax.core.Tracer) and bool(np.isnan(np.asarray(y)).any()):
            return ExactLinear(tol=self.tol, masked=True, method=self.method)
        return self

    def check(self, net):
        if not (isinstance(net, MLP) and net.is_linear):
            name = getattr(net, "activation_name", type(net).__name__)
            raise ValueError(
                f"solver=ExactLinear() needs a linear MLP (activation='linear'), but this "
                f"{type(net).__name__} has activation {name!r}; use solver=pcl.Newton() (or "
                f"pcl.Heun(), pcl.Euler()) for nonlinear networks."
            )

    def solve(self, net, x, y, z0):
        ws, bs = net.linear_maps()  # M_l = a_l W_l (+ I on skip layers), offsets a_l b_l
        p = net.output_precision
        n_hidden = len(ws) - 1
        if n_hidden == 0:
            return (), jnp.asarray(0, jnp.int32)
        dtype = jnp.result_type(x, ws[0])
        observed = ~jnp.isnan(y)
        y = jnp.where(observed, y, 0.0)
        if self.method == "output" or (self.method == "auto" and _output_space_is_cheaper(ws)):
            return _solve_in_output_space(ws, bs, p, x, y, observed if self.masked else None), jnp.asarray(1, jnp.int32)
        rhs = []
        for l in range(1, n_hidden + 1):  # hidden layer l uses M_l (in) and M_{l+1} (out)
            r = jnp.zeros((x.shape[0], ws[l - 1].shape[0]), dtype)
            out_weight = p if l == n_hidden else 1.0  # the output term carries the precision
            if l == 1:
                r = r + x @ ws[0].T
            if l == n_hidden:
                r = r + p * (y @ ws[-1])
                if bs is not None and self.masked:  # the output bias acts on observed units only
                    r = r + p * (bs[-1] @ ws[-1] - (observed * bs[-1]) @ ws[-1])
            if bs is not None:
                r = r + bs[l - 1] - out_weight * (bs[l] @ ws[l])
            rhs.append(r)
        chols, cs = [], []
        for l in range(1, n_hidden + 1):
            w_out = ws[l]
            last = l == n_hidden
            if last and self.masked:  # per sample: I + p M_L^T O_i M_L
                gram = p * jnp.einsum("no,oi,oj->nij", observed.astype(dtype), w_out, w_out)
            else:
                gram = (p if last else 1.0) * (w_out.T @ w_out)
            d = jnp.eye(w_out.shape[1], dtype=dtype) + gram
            c = rhs[l - 1]
            if l > 1:
                w_in = ws[l - 1]
                prev = chols[-1]
                d = d - w_in @ jsl.cho_solve(prev, w_in.T)
                c = c + jsl.cho_solve(prev, cs[-1].T).T @ w_in.T
            if last and self.masked:  # per sample, unbatched (see pclandscape._linalg)
                chols.append(map_unbatched(lambda m: jsl.cho_factor(m, lower=True)[0], d))
            else:
                chols.append(jsl.cho_factor(d, lower=True))
            cs.append(c)
        zs = [None] * n_hidden
        if self.masked:
            zs[-1] = map_unbatched(lambda lc: jsl.cho_solve((lc[0], True), lc[1]), (chols[-1], cs[-1]))
        else:
            zs[-1] = jsl.cho_solve(chols[-1], cs[-1].T).T
        for l in range(n_hidden - 1, 0, -1):  # hidden index l-1 (0-based), layer l
            zs[l - 1] = jsl.cho_solve(chols[l - 1], (cs[l - 1] + zs[l] @ ws[l]).T).T
        return tuple(zs), jnp.asarray(1, jnp.int32)


def _output_space_is_cheaper(ws) -> bool:
    """Whether the output dimension is below every hidden width (static shapes)."""
    return ws[-1].shape[0] < min(w.shape[0] for w in ws[:-1])


def _solve_in_output_space(ws, bs, p, x, y, observed):
    """The equilibrium activities by the output-space route of :class:`ExactLinear`.

    ``ws``/``bs``: the maps ``M_l`` and offsets ``c_l``; ``p``: output precision;
    ``x`` ``(N, d_x)``; ``y`` ``(N, d_y)`` with missing entries zeroed and ``observed`` their
    mask (None: every target observed). Returns the hidden activities ``(N, n_l)``."""
    n_hidden = len(ws) - 1
    prods = [ws[-1]]  # P_H = M_L, P_l = P_{l+1} M_{l+1}
    for l in range(n_hidden - 1, 0, -1):
        prods.insert(0, prods[0] @ ws[l])
    gram = sum(q @ q.T for q in prods)
    forward = [x]
    for l, m in enumerate(ws):
        forward.append(forward[-1] @ m.T + (0.0 if bs is None else bs[l]))
    r = y - forward[-1]
    eye = jnp.eye(gram.shape[0], dtype=gram.dtype)
    if observed is None:
        u = jsl.cho_solve(jsl.cho_factor(eye + p * gram, lower=True), r.T).T
    else:  # per sample: (I + p O G O) u = O r, d_y x d_y, one unbatched LAPACK call each
        o = observed.astype(gram.dtype)
        mats = eye + p * o[:, :, None] * gram * o[:, None, :]
        u = map_unbatched(lambda a: jsl.cho_solve(jsl.cho_factor(a[0], lower=True), a[1]), (mats, o * r))
    zs, shift = [], 0.0
    for l in range(n_hidden):  # z_l = M_l z_{l-1} + c_l + e_l, e_l = p P_l^T e_L
        shift = (shift @ ws[l].T if l else 0.0) + p * (u @ prods[l])
        zs.append(forward[l + 1] + shift)
    return tuple(zs)
