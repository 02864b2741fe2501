"""The Hessian of the energy with respect to the activities, and its block-tridiagonal structure.

For one sample, ``F_i`` couples each hidden layer only to its neighbours, so
``d^2 F_i / dz_i^2`` is block tridiagonal across layers. For an MLP
(``mu_{l+1} = W_{l+1} f(z_l) + b_{l+1}``, ``e_l = z_l - mu_l``) the blocks are, for hidden
layers ``l = 1..H``::

    D_l     = I + diag(f'(z_l)) W_{l+1}^T W_{l+1} diag(f'(z_l)) - diag(f''(z_l) * W_{l+1}^T e_{l+1})
    C_l     = d^2 F_i / dz_{l+1} dz_l = -W_{l+1} diag(f'(z_l))          (l = 1..H-1)

For scaled and residual MLPs (``mu_{l+1} = a W f(z_l) + s z_l``, output precision ``p``) the
same holds with the layer Jacobian ``J_{l+1} = a W_{l+1} diag(f'(z_l)) + s I`` in place of
``W_{l+1} diag(f'(z_l))``, ``a W`` in the curvature term, and the output block's ``J^T J``
and curvature weighted by ``p``.

(for a linear network ``f' = 1``, ``f'' = 0`` and the blocks are the same for every sample).
:func:`activity_hessian_blocks` builds them in closed form (no autodiff); for other networks
:func:`dense_activity_hessian` falls back to autodiff.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._linalg import inv_per_sample
from .networks import MLP, PCNetwork, has_block_closed_form
from ._energies import activities_from_errors, hidden_errors, output_error, per_sample_energies

__all__ = [
    "activity_hessian_blocks",
    "dense_activity_hessian",
    "factor_activity_hessian",
    "mlp_activity_hvp",
    "mlp_error_preconditioner",
    "error_preconditioner",
    "mlp_errors",
    "mlp_energy_change",
    "energy_change_from",
    "BlockTridiagonalInverse",
    "per_sample_flat",
    "unflatten_per_sample",
]


def per_sample_flat(z) -> Array:
    """Concatenate hidden activities ``(z_1, ..., z_H)`` into ``(N, m)``, ``m = sum of layer sizes``."""
    n = z[0].shape[0]
    return jnp.concatenate([a.reshape(n, -1) for a in z], axis=1)


def unflatten_per_sample(flat: Array, like) -> tuple[Array, ...]:
    """Inverse of :func:`per_sample_flat`, with the layer shapes of ``like``."""
    out, i = [], 0
    for a in like:
        size = a[0].size
        out.append(flat[:, i : i + size].reshape((flat.shape[0],) + a.shape[1:]))
        i += size
    return tuple(out)


def _derivatives(fn, z):
    """Elementwise ``f'(z)`` and ``f''(z)``."""
    d1 = jax.grad(fn)
    d2 = jax.grad(d1)
    flat = z.reshape(-1)
    return jax.vmap(d1)(flat).reshape(z.shape), jax.vmap(d2)(flat).reshape(z.shape)


def mlp_errors(net: MLP, z, x: Array, y: Array):
    """Closed-form pieces of an MLP's energy, per hidden layer ``l = 1..H``.

    With ``mu_{l+1} = A_{l+1} f(z_l) + s_{l+1} z_l`` (``A = a W`` the scaled weights, ``s = 1``
    on the skip layers of a residual MLP, else 0), errors ``e_l = z_l - mu_l`` and output
    precision ``p`` (weights ``p_l = p`` for ``l = L``, else 1), the activity gradient is
    ``dF_i/dz_l = r_l - f'(z_l) c_l`` with ``r_l = e_l - s_{l+1} p_{l+1} e_{l+1}`` and
    ``c_l = A_{l+1}^T p_{l+1} e_{l+1}``.

    Returns ``(residuals, backs, energies)``: ``residuals[l-1] = r_l`` and ``backs[l-1] = c_l``
    (each ``(N, n_l)``; the output error of an unobserved (NaN) target is 0), and the
    per-sample energies ``F_i = 1/2 sum_l p_l ||e_l||^2`` ``(N,)``. For a plain MLP
    (``a = 1``, no skips, ``p = 1``) ``r_l = e_l`` and ``c_l = W_{l+1}^T e_{l+1}``.

    Raises ``ValueError`` for an MLP predicting ``f(W z)`` (these formulas are for ``W f(z)``).
    """
    if not has_block_closed_form(net):
        raise ValueError(
            "the closed-form MLP energy pieces are written for layers predicting W f(z); this network "
            "predicts f(W z) (or is not an MLP): use the autodiff paths (pcl.Newton(linear_solve=pcl.CG()), "
            "pcl.Euler, pcl.Heun)."
        )
    n_layers = net.n_layers
    p = net.output_precision
    errors = _prediction_errors(net, z, x, y)
    weighted = errors[:-1] + [errors[-1] if p == 1.0 else p * errors[-1]]
    energies = 0.5 * sum(jnp.sum(e * w, axis=1) for e, w in zip(errors, weighted))
    aws = net.scaled_weights()
    backs = [weighted[l] @ aws[l] for l in range(1, n_layers)]
    residuals = [errors[l - 1] - weighted[l] if net.has_skip(l + 1) else errors[l - 1] for l in range(1, n_layers)]
    return residuals, backs, energies


def mlp_energy_change(net: MLP, z, z_new, x: Array, y: Array) -> tuple[Array, Array]:
    """Per-sample energy change ``F_i(z_new) - F_i(z)`` of an MLP, computed from differences.

    ``F_i = 1/2 sum_l p_l ||e_l||^2`` changes by ``sum_l p_l <de_l, e_l + de_l / 2>``, with the
    error changes ``de_l = dz_l - A_l (f(z'_{l-1}) - f(z_{l-1})) - s_l dz_{l-1}`` (``A = a W``,
    biases cancel; ``dz = z' - z``, zero for the clamped input and output). Subtracting two
    energies loses everything below their floating-point resolution: near an equilibrium the
    output term (``~1`` for one-hot targets) hides changes of the small hidden errors below
    ``6e-8`` in float32. Here the rounding error is relative to the change itself wherever
    ``f(z') - f(z)`` is exact -- ReLU and linear nets, where the Newton solver's active-set
    iteration uses it (with ``F(z') - F(z)`` it cycled forever at a residual of ``9e-5`` on a
    128-layer ReLU net in float32, each step within one ulp of ``F_i``).

    Args:
        net: an MLP predicting ``W f(z)`` (:func:`pclandscape.networks.has_block_closed_form`).
        z: hidden activities, a tuple of ``(N, n_l)`` arrays.
        z_new: the activities after the step, alike.
        x: inputs ``(N, d_x)``.
        y: targets ``(N, d_y)`` (NaN entries unobserved: no change there).

    Returns:
        ``(change, scale)``, each ``(N,)``: the change, and ``sum_l p_l ||de_l|| (||e_l|| +
        ||de_l||)``, the size of the terms it sums (its rounding error is ``~eps * scale``).
    """
    return energy_change_from(net, z, x, y)(z_new)


def _prediction_errors(net: MLP, z, x: Array, y: Array) -> list[Array]:
    """``[e_1, ..., e_L]``: ``e_l = z_l - mu_l(z_{l-1})``, the output error of an unobserved
    (NaN) target 0."""
    zs = (x, *z, y)
    n_layers = net.n_layers
    errors = [zs[l] - net.predict(l, zs[l - 1]) for l in range(1, n_layers)]
    errors.append(output_error(y, net.predict(n_layers, zs[-2])))
    return errors


def energy_change_from(net: MLP, z, x: Array, y: Array):
    """The map ``z_new -> (change, scale)`` of :func:`mlp_energy_change` from the point ``z``:
    the errors at ``z`` are computed once, so that a line search measures all its trial points
    ``z_new`` (tuples of ``(N, n_l)`` arrays) against them."""
    if not has_block_closed_form(net):
        raise ValueError("mlp_energy_change is written for MLPs predicting W f(z); use F(z') - F(z).")
    errors = _prediction_errors(net, z, x, y)
    return lambda z_new: _energy_change(net, z, errors, z_new, y)


def _energy_change(net: MLP, z, errors, z_new, y: Array) -> tuple[Array, Array]:
    """:func:`mlp_energy_change` given the errors ``[e_1, ..., e_L]`` at ``z``."""
    n_layers, p, f = net.n_layers, net.output_precision, net.activation
    aws = net.scaled_weights()
    change = scale = 0.0
    for layer in range(1, n_layers + 1):
        e = errors[layer - 1]
        de = z_new[layer - 1] - z[layer - 1] if layer < n_layers else jnp.zeros_like(e)
        if layer > 1:
            below, below_new = z[layer - 2], z_new[layer - 2]
            dmu = (f(below_new) - f(below)) @ aws[layer - 1].T
            if net.has_skip(layer):
                dmu = dmu + (below_new - below)
            de = de - dmu
        if layer == n_layers:
            de = jnp.where(jnp.isnan(y), 0.0, de)
        weight = p if layer == n_layers else 1.0
        change = change + weight * jnp.sum(de * (e + 0.5 * de), axis=1)
        nde = jnp.linalg.norm(de, axis=1)
        scale = scale + weight * nde * (jnp.linalg.norm(e, axis=1) + nde)
    return change, scale


def _slopes_and_curvature(net: MLP, z, x, y, slopes):
    """Per hidden layer ``f'(z_l)`` and the diagonal curvature term ``f''(z_l) * c_l`` of the
    activity Hessian; ``None`` entries stand for ``f' = 1`` / no curvature term (a linear net,
    or the given ``slopes`` of a quadratic piece, where ``f'' = 0``)."""
    n_hidden = net.n_layers - 1
    if slopes is not None:
        return list(slopes), [None] * n_hidden
    if net.is_linear:
        return [None] * n_hidden, [None] * n_hidden
    _, backs, _ = mlp_errors(net, z, x, y)
    derivs = [_derivatives(net.activation, a) for a in z]
    return [d1 for d1, _ in derivs], [d2 * c for (_, d2), c in zip(derivs, backs)]


def activity_hessian_blocks(
    net: MLP, z, x: Array, y: Array, *, shared: bool = False, slopes=None, fixed=None
) -> tuple[list[Array], list[Array]]:
    """Per-sample block-tridiagonal ``d^2 F_i / dz_i^2`` of an MLP, in closed form.

    Returns ``(diag, off)``: ``diag[l]`` of shape ``(N, n_{l+1}, n_{l+1})`` is the block of hidden
    layer ``l+1`` (0-based list), ``off[l]`` of shape ``(N, n_{l+2}, n_{l+1})`` couples hidden
    layers ``l+2`` and ``l+1``. Unobserved (NaN) targets drop out of the last block. With
    ``shared=True`` (a linear network whose targets are all observed) every block is the
    same for all samples and is returned once, with a leading axis of size 1.

    For a piecewise-linear activation (:mod:`pclandscape.kinks`), ``slopes`` (one
    ``(N, n_l)`` array per hidden layer) gives ``f'`` on the quadratic piece to use
    (``f'' = 0`` there), and ``fixed`` (boolean, same shapes) marks activities held fixed:
    their rows and columns are replaced by those of the identity, so a solve leaves them
    where they are (a Newton step on a face of the piece).
    """
    ws = net.scaled_weights()
    p = net.output_precision
    n_hidden = len(ws) - 1
    n = 1 if shared else x.shape[0]
    observed = (~jnp.isnan(y)).astype(ws[-1].dtype)
    fps, curvs = _slopes_and_curvature(net, z, x, y, slopes)
    diag, off = [], []
    for l in range(1, n_hidden + 1):  # hidden layer l; outgoing (scaled) weight A_{l+1} = ws[l]
        w_out = ws[l]
        n_l = w_out.shape[1]
        eye = jnp.eye(n_l, dtype=w_out.dtype)
        last = l == n_hidden
        weight = p if last else 1.0
        skip = net.has_skip(l + 1)  # mu_{l+1} also adds z_l: the Jacobian gains an identity
        fp, curv = fps[l - 1], curvs[l - 1]
        if fp is None:  # linear: the same blocks for every sample
            jac = w_out + eye if skip else w_out
            if last and not shared:  # J^T M_i J with the per-sample mask of observed outputs
                gram = jnp.einsum("no,oi,oj->nij", observed, jac, jac)
            else:
                gram = (jac.T @ jac)[None]
            d = jnp.broadcast_to(eye + weight * gram, (n, n_l, n_l))
            c = jnp.broadcast_to(-jac, (n,) + jac.shape)
        elif skip:  # per sample J_i = A diag(f'_i) + I
            jac = w_out[None] * fp[:, None, :] + eye[None]
            d = eye + jnp.einsum("noi,noj->nij", jac, jac)
            c = -jac
        else:
            if last and not shared:
                gram = jnp.einsum("no,oi,oj->nij", observed, w_out, w_out)
            else:
                gram = (w_out.T @ w_out)[None]
            d = eye + weight * (fp[:, :, None] * gram * fp[:, None, :])
            c = -w_out[None] * fp[:, None, :]
        if curv is not None:
            d = d - jax.vmap(jnp.diag)(curv)
        if fixed is not None:
            keep = 1.0 - fixed[l - 1].astype(d.dtype)
            d = keep[:, :, None] * d * keep[:, None, :] + jax.vmap(jnp.diag)(1.0 - keep)
            c = c * keep[:, None, :]
            if l < n_hidden:
                c = c * (1.0 - fixed[l].astype(d.dtype))[:, :, None]
        diag.append(d)
        if l < n_hidden:
            off.append(c)
    return diag, off


def mlp_activity_hvp(net: MLP, z, x: Array, y: Array, *, slopes=None, fixed=None):
    """Closed-form products with the per-sample activity Hessian of an MLP (matrix-free).

    Returns ``v -> H v`` for tuples ``v = (v_1, ..., v_H)`` of ``(N, n_l)`` arrays, with
    ``H v = J^T J v - (f''(z) * W^T e) v``, where ``J v`` is the derivative of the prediction
    errors, ``(J v)_l = v_l - W_l (f'(z_{l-1}) v_{l-1})`` (output errors of unobserved targets
    dropped). The derivatives and back-projected errors are computed once, so a product costs
    two matrix products per layer (forward-over-reverse autodiff recomputes the gradient in
    each product: about three times as many). ``slopes`` and ``fixed``: as in
    :func:`activity_hessian_blocks` (the quadratic piece of a piecewise-linear activation,
    activities held fixed: identity rows and columns).
    """
    ws, skips, fp, curv = _layer_pieces(net, z, x, y, slopes, fixed)
    p = net.output_precision
    n_hidden = len(ws) - 1
    observed = (~jnp.isnan(y)).astype(ws[-1].dtype)

    def mv(v):
        # (J v) per layer: u[l] is the derivative of the error of layer l + 1
        u = [v[0]] + [v[l] - _scale(fp[l - 1], v[l - 1]) @ ws[l].T - (v[l - 1] if skips[l] else 0.0)
                      for l in range(1, n_hidden)]
        u.append(-observed * (_scale(fp[-1], v[-1]) @ ws[-1].T))
        pu = u[:-1] + [u[-1] if p == 1.0 else p * u[-1]]
        # J^T P (J v)
        w = [u[l] - _scale(fp[l], pu[l + 1] @ ws[l + 1]) - (pu[l + 1] if skips[l + 1] else 0.0) for l in range(n_hidden)]
        return tuple(a if c is None else a - c * b for a, c, b in zip(w, curv, v))

    return _on_free(mv, fixed)


def _scale(s, v):
    """``diag(s) v``, with ``s = None`` standing for ``f' = 1``."""
    return v if s is None else s * v


def _layer_pieces(net: MLP, z, x, y, slopes, fixed):
    """``(scaled weights, skips, f', curvature)`` of the closed-form products: ``skips[l]`` for
    layer ``l + 1``; ``f'`` zeroed at the held (``fixed``) activities."""
    ws = net.scaled_weights()
    skips = [net.has_skip(l) for l in range(1, len(ws) + 1)]
    fp, curv = _slopes_and_curvature(net, z, x, y, slopes)
    if fixed is not None:
        fp = [jnp.where(f, 0.0, 1.0 if s is None else s) for f, s in zip(fixed, fp)]
    return ws, skips, fp, curv


def _on_free(mv, fixed):
    """``mv`` on the free activities, the identity on the held (``fixed``) ones."""
    if fixed is None:
        return lambda v: tuple(mv(list(v)))

    def restricted(v_all):
        out = mv([jnp.where(f, 0.0, a) for f, a in zip(fixed, v_all)])
        return tuple(jnp.where(f, b, a) for f, a, b in zip(fixed, out, v_all))

    return restricted


def mlp_error_preconditioner(net: MLP, z, x: Array, y: Array, *, slopes=None, fixed=None):
    """Products with ``(K^T K)^{-1}``, the inverse of the hidden-error part of an MLP's activity
    Hessian: a preconditioner for conjugate gradients on :func:`mlp_activity_hvp`.

    ``K = de/dz`` is the Jacobian of the hidden prediction errors ``e_l = z_l - mu_l(z_{l-1})``
    (``l = 1..H``): block lower bidiagonal, identity blocks on its diagonal and
    ``-J_l = -(a W_l diag(f'(z_{l-1})) + s I)`` below. The activity Hessian is
    ``H = K^T K + p G^T G - C`` (``G`` the output error's Jacobian, of rank ``<= d_y``; ``C`` the
    ``f''`` curvature term), so in the preconditioned system ``(K^T K)^{-1} H`` is the identity
    plus a term of rank ``<= d_y`` plus the curvature term, whatever the depth or the
    conditioning of ``K`` (the error coordinates of :class:`pclandscape.EPC`). Conjugate
    gradients then need about ``d_y + 1`` products near an equilibrium instead of ``~sqrt(kappa(H))``.

    ``(K^T K)^{-1} v = K^{-1} K^{-T} v``: a backward then a forward substitution, one matrix
    product per layer each (as much as one :func:`mlp_activity_hvp` product). Returns
    ``v -> (K^T K)^{-1} v`` for tuples of ``(N, n_l)`` arrays; ``slopes`` and ``fixed`` as in
    :func:`mlp_activity_hvp` (held activities: identity rows, and ``K`` with their slopes
    zeroed, so the map stays symmetric positive definite on the free ones).
    """
    ws, skips, fp, _ = _layer_pieces(net, z, x, y, slopes, fixed)  # (the unused curvature is dead code under jit)
    n_hidden = len(ws) - 1

    def mv(v):
        # K^{-T} v: w_H = v_H, w_l = v_l + J_{l+1}^T w_{l+1}
        w = [None] * n_hidden
        w[-1] = v[-1]
        for l in range(n_hidden - 2, -1, -1):
            w[l] = v[l] + _scale(fp[l], w[l + 1] @ ws[l + 1]) + (w[l + 1] if skips[l + 1] else 0.0)
        # K^{-1} w: u_1 = w_1, u_l = w_l + J_l u_{l-1}
        u = [w[0]]
        for l in range(1, n_hidden):
            u.append(w[l] + _scale(fp[l - 1], u[l - 1]) @ ws[l].T + (u[l - 1] if skips[l] else 0.0))
        return u

    return _on_free(mv, fixed)


def error_preconditioner(net: PCNetwork, z, x: Array, y: Array, *, slopes=None, fixed=None):
    """``v -> (K^T K)^{-1} v`` for any network (``K = de/dz``, the hidden errors' Jacobian; see
    :func:`mlp_error_preconditioner`, the closed form used for the MLPs that have one).

    Other networks (``f(W z)`` MLPs, the CNN) by autodiff: ``(K^T K)^{-1} = J J^T`` with
    ``J = K^{-1} = dz/de`` the Jacobian of :func:`activities_from_errors` at ``e(z)``, one
    linearised forward pass and its transpose per product.

    ``z``: the hidden activities ``(z_1, ..., z_H)``, each ``(N, ...)``; the returned map takes
    and returns tuples of that shape, sample by sample. ``slopes`` / ``fixed`` (ReLU faces):
    as in :func:`mlp_activity_hvp`, for the MLPs with a closed form only.
    """
    if has_block_closed_form(net):
        return mlp_error_preconditioner(net, z, x, y, slopes=slopes, fixed=fixed)
    if slopes is not None or fixed is not None:
        raise ValueError("slopes / fixed are defined for MLPs predicting W f(z) only.")
    e = hidden_errors(net, x, tuple(z))
    _, jvp = jax.linearize(lambda ee: activities_from_errors(net, x, ee), e)
    vjp = jax.linear_transpose(jvp, e)
    return lambda v: jvp(vjp(tuple(v))[0])


def dense_activity_hessian(net: PCNetwork, z, x: Array, y: Array) -> Array:
    """Per-sample activity Hessians ``d^2 F_i / dz_i^2`` as dense ``(N, m, m)`` matrices.

    Assembled from :func:`activity_hessian_blocks` for MLPs; by autodiff for other networks.
    """
    if has_block_closed_form(net):
        diag, off = activity_hessian_blocks(net, z, x, y)
        n = x.shape[0]
        diag = [jnp.broadcast_to(d, (n,) + d.shape[1:]) for d in diag]
        off = [jnp.broadcast_to(c, (n,) + c.shape[1:]) for c in off]
        sizes = [d.shape[1] for d in diag]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        m = sum(sizes)
        h = jnp.zeros((n, m, m), diag[0].dtype)
        for i, d in enumerate(diag):
            s0 = starts[i]
            h = h.at[:, s0 : s0 + sizes[i], s0 : s0 + sizes[i]].set(d)
        for i, c in enumerate(off):  # c: (N, n_{i+2}, n_{i+1}) = d^2/dz_{i+2} dz_{i+1}
            r0, c0 = starts[i + 1], starts[i]
            h = h.at[:, r0 : r0 + sizes[i + 1], c0 : c0 + sizes[i]].set(c)
            h = h.at[:, c0 : c0 + sizes[i], r0 : r0 + sizes[i + 1]].set(jnp.swapaxes(c, 1, 2))
        return h
    like = tuple(a[:1] for a in z)

    def one(zi_flat, xi, yi):
        def f(v):
            return jnp.sum(per_sample_energies(net, unflatten_per_sample(v[None], like), xi[None], yi[None]))

        return jax.hessian(f)(zi_flat)

    return jax.vmap(one)(per_sample_flat(z), x, y)


# --------------------------------------------------------------------------- solves


class BlockTridiagonalInverse(eqx.Module):
    """A factorised block-tridiagonal activity Hessian, ready to solve ``A w = b`` per sample.

    Block elimination (block LDL^T): ``S_1 = D_1``, ``S_l = D_l - C_{l-1} S_{l-1}^{-1} C_{l-1}^T``
    with the Schur complements inverted once, so a solve is matrix products only (cheap
    inside loops, and no LAPACK call in a traced loop). Blocks have a leading sample axis of
    size ``N``, or 1 when shared by every sample (linear networks).
    """

    s_inv: tuple
    off: tuple

    def solve(self, b):
        """Solve for per-sample right-hand sides ``b = (b_1, ..., b_H)``, each ``(N, n_l)``."""
        mv = lambda m, v: jnp.einsum("nij,nj->ni", m, v) if m.shape[0] > 1 else v @ m[0].T
        h = len(self.s_inv)
        c = [b[0]]
        for l in range(1, h):
            c.append(b[l] - mv(self.off[l - 1], mv(self.s_inv[l - 1], c[l - 1])))
        w = [None] * h
        w[-1] = mv(self.s_inv[-1], c[-1])
        for l in range(h - 2, -1, -1):
            w[l] = mv(self.s_inv[l], c[l] - mv(jnp.swapaxes(self.off[l], 1, 2), w[l + 1]))
        return tuple(w)


def factor_activity_hessian(
    net: MLP, z, x: Array, y: Array, *, shared: bool = False, slopes=None, fixed=None
) -> BlockTridiagonalInverse:
    """Factorise the per-sample activity Hessian of an MLP.

    ``shared=True`` (only for a linear network whose targets are all observed) factorises
    the single block-tridiagonal matrix common to all samples. Cost ``O(N H n^3)``
    (``O(H n^3)`` shared); each later solve is ``O(N H n^2)``. ``slopes`` and ``fixed``: see
    :func:`activity_hessian_blocks`.
    """
    diag, off = activity_hessian_blocks(net, z, x, y, shared=shared, slopes=slopes, fixed=fixed)
    s_inv = []
    for l, d in enumerate(diag):
        if l > 0:
            c = off[l - 1]
            d = d - c @ s_inv[-1] @ jnp.swapaxes(c, 1, 2)
        s_inv.append(inv_per_sample(d))
    return BlockTridiagonalInverse(tuple(s_inv), tuple(off))

