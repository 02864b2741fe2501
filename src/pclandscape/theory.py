"""Closed forms for deep linear networks (the paper's theory, §3 and §A.3).

All functions take the weights ``[W_1, ..., W_L]`` (``W_l`` of shape ``(n_l, n_{l-1})``)
and data ``x: (N, d_x)``, ``y: (N, d_y)``. Empirical covariances follow the paper:
``Sigma_xy = 1/N sum_i x_i y_i^T`` etc.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Float

__all__ = [
    "rescaling",
    "equilibrated_energy",
    "network_equilibrated_energy",
    "product",
    "loss_hessian_at_origin",
    "energy_hessian_at_origin",
    "chain_hessians_at_origin",
    "chain_eigenvalues_at_origin",
    "zero_rank_saddle",
    "ZeroRankSaddle",
    "origin_spectrum",
    "network_origin_spectrum",
]


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
    if k < l:
        return jnp.eye(ws[l - 2].shape[0] if l > 1 else ws[0].shape[1], dtype=ws[0].dtype)
    out = ws[l - 1]
    for i in range(l + 1, k + 1):
        out = ws[i - 1] @ out
    return out


@jax.jit
def rescaling(weights: Sequence[Float[Array, "out in"]], output_precision: float = 1.0) -> Float[Array, "dy dy"]:
    """The rescaling of Theorem 1: ``S = I_{d_y} / p + sum_{l=2}^{L} W_{L:l} W_{L:l}^T``.

    ``S`` is the covariance of the output that the hierarchical Gaussian model of PC
    implies (Eq 30): unit noise at every hidden layer, noise of variance ``1/p`` at the
    output (``p`` the output precision, 1 in the paper). For scaled or residual linear MLPs
    pass their linear maps ``M_l = a_l W_l (+ I)`` (``MLP.linear_maps()``) as ``weights``.
    """
    ws = _check_weights(weights)
    d_y = ws[-1].shape[0]
    s = jnp.eye(d_y, dtype=ws[0].dtype) / output_precision
    m = jnp.eye(d_y, dtype=ws[0].dtype)  # W_{L:l}, built from l = L downwards
    for l in range(len(ws), 1, -1):
        m = m @ ws[l - 1]
        s = s + m @ m.T
    return s


@jax.jit
def equilibrated_energy(
    weights: Sequence[Float[Array, "out in"]],
    x: Float[Array, "N dx"],
    y: Float[Array, "N dy"],
    output_precision: float = 1.0,
) -> Float[Array, ""]:
    """Theorem 1 (Eq 5): ``F* = 1/(2N) sum_i r_i^T S^{-1} r_i``, ``r_i = y_i - W_{L:1} x_i`` (contract).

    The PC energy of a deep linear network at the exact inference equilibrium. Generalised
    (beyond the paper) to any linear maps ``M_l`` in place of ``W_l`` -- the muPC / NTP
    scalings and identity skips of ``MLP(residual=True, param=...)`` enter only through
    ``M_l = a_l W_l (+ I)``, see ``MLP.linear_maps()`` -- and to an output precision ``p``
    (the weight of the output term of the energy), which enters ``S`` as ``I/p``
    (:func:`rescaling`): the minimum over the activities of a Gaussian model's joint energy
    is its marginal energy.
    """
    ws = _check_weights(weights)
    _check_xy(ws, x, y)
    pred = x
    for w in ws:  # W_{L:1} x_i applied layer by layer: O(N sum n_l n_{l-1}), no matrix product
        pred = pred @ w.T
    r = y - pred
    s = rescaling(ws, output_precision)
    sol = jsl.cho_solve(jsl.cho_factor(s, lower=True), r.T)
    return 0.5 * jnp.mean(jnp.sum(r.T * sol, axis=0))


# --------------------------------------------------------------------------- Hessians at 0


def _covariances(x: Array, y: Array) -> tuple[Array, Array]:
    n = x.shape[0]
    return x.T @ y / n, y.T @ y / n  # Sigma_xy (d_x, d_y), Sigma_yy (d_y, d_y)


def _row_from_col_major(n_rows: int, n_cols: int) -> Array:
    """Permutation ``P`` with ``vec_r(A) = vec_c(A)[P]`` for an ``(n_rows, n_cols)`` matrix."""
    return jnp.arange(n_rows * n_cols).reshape(n_cols, n_rows).T.reshape(-1)


def _check_origin_args(widths, x, y) -> tuple[int, ...]:
    widths = tuple(int(w) for w in widths)
    if len(widths) < 3:
        raise ValueError(
            f"widths={list(widths)} has no hidden layer; the Hessians at the origin (Eqs 6, 8) are "
            f"for networks with H >= 1 hidden layers, e.g. widths=[d_x, n_1, d_y]."
        )
    if jnp.ndim(x) != 2 or jnp.shape(x)[1] != widths[0]:
        raise ValueError(f"x has shape {jnp.shape(x)}; expected (N, {widths[0]}) = (N, widths[0]).")
    if jnp.ndim(y) != 2 or jnp.shape(y)[1] != widths[-1]:
        raise ValueError(f"y has shape {jnp.shape(y)}; expected (N, {widths[-1]}) = (N, widths[-1]).")
    return widths


def _one_hidden_cross_block(widths, sxy) -> Array:
    """``d^2/dW_1 dW_2`` at the origin for H = 1: ``-Sigma_xy (x) I_{n_1}`` of Eq 6, re-indexed.

    The paper's Kronecker form indexes ``W_1`` column-major (``d_x`` outer, ``n_1`` inner) and
    ``W_2`` row-major; the rows are permuted here to the row-major order of docs/conventions.md.
    """
    d_x, n_1, d_y = widths
    block = -jnp.kron(sxy, jnp.eye(n_1, dtype=sxy.dtype))  # rows (b, a) col-major W_1, cols (c, d) row-major W_2
    return block[_row_from_col_major(n_1, d_x)]


def _assemble_origin(widths, cross, last, dtype) -> Array:
    sizes = [a * b for a, b in zip(widths[:-1], widths[1:])]
    p = sum(sizes)
    h = jnp.zeros((p, p), dtype)
    if cross is not None:  # H = 1: blocks (W_1, W_2) and (W_2, W_1)
        h = h.at[: sizes[0], sizes[0] :].set(cross)
        h = h.at[sizes[0] :, : sizes[0]].set(cross.T)
    if last is not None:
        h = h.at[p - sizes[-1] :, p - sizes[-1] :].add(last)
    return h


def loss_hessian_at_origin(
    widths: Sequence[int], x: Float[Array, "N dx"], y: Float[Array, "N dy"]
) -> Float[Array, "p p"]:
    """Eq 6: the Hessian of the MSE loss of a deep linear network at ``theta = 0`` (contract).

    ``[[0, -Sigma_xy (x) I_{n_1}], [-I_{n_1} (x) Sigma_yx, 0]]`` for one hidden layer
    (H = 1) and the zero matrix for H > 1. Built from the Kronecker formula, in the
    row-major ``W_1, ..., W_L`` order of docs/conventions.md; shape ``(p, p)``.
    """
    widths = _check_origin_args(widths, x, y)
    sxy, syy = _covariances(x, y)
    cross = _one_hidden_cross_block(widths, sxy) if len(widths) == 3 else None
    return _assemble_origin(widths, cross, None, sxy.dtype)


def energy_hessian_at_origin(
    widths: Sequence[int], x: Float[Array, "N dx"], y: Float[Array, "N dy"]
) -> Float[Array, "p p"]:
    """Eq 8: the Hessian of the equilibrated energy ``F*`` of a deep linear network at ``theta = 0`` (contract).

    Eq 6 plus the last diagonal block ``-Sigma_yy (x) I_{n_{L-1}}`` (exactly ``jnp.kron``
    in the row-major order), for any number of hidden layers; shape ``(p, p)``.
    """
    widths = _check_origin_args(widths, x, y)
    sxy, syy = _covariances(x, y)
    last = -jnp.kron(syy, jnp.eye(widths[-2], dtype=syy.dtype))
    cross = _one_hidden_cross_block(widths, sxy) if len(widths) == 3 else None
    return _assemble_origin(widths, cross, last, syy.dtype)


# --------------------------------------------------------------------------- linear chains


def _chain_stats(x, y) -> tuple[Array, Array]:
    x = jnp.reshape(jnp.asarray(x), (-1,))
    y = jnp.reshape(jnp.asarray(y), (-1,))
    if x.shape != y.shape:
        raise ValueError(f"x and y must hold one scalar per sample; got {x.shape[0]} and {y.shape[0]} values.")
    return jnp.mean(x * y), jnp.mean(y * y)


def chain_hessians_at_origin(n_hidden: int, x, y) -> tuple[Array, Array]:
    """Eqs 62-63: loss and energy Hessians at the origin of a linear chain (unit widths).

    ``x``, ``y`` hold one scalar per sample; ``xy`` and ``y^2`` are batch means (the
    paper's empirical covariances). Returns ``(H_L, H_F*)``, each ``(L, L)`` with
    ``L = n_hidden + 1``.
    """
    if n_hidden < 1:
        raise ValueError(f"n_hidden={n_hidden} must be >= 1.")
    sxy, syy = _chain_stats(x, y)
    L = n_hidden + 1
    h_l = jnp.zeros((L, L), sxy.dtype)
    if n_hidden == 1:
        h_l = h_l.at[0, 1].set(-sxy).at[1, 0].set(-sxy)
    h_f = h_l.at[L - 1, L - 1].set(-syy)
    return h_l, h_f


def chain_eigenvalues_at_origin(n_hidden: int, x, y) -> tuple[Array, Array]:
    """Closed-form eigenvalues (ascending) of Eqs 62-63, as derived in §A.3.5.

    H = 1: loss ``+-xy``; energy ``(-y^2 +- sqrt(y^4 + 4 (xy)^2)) / 2`` (for one sample,
    ``(-y^2 +- y sqrt(4x^2 + y^2))/2``), both below the loss ones (Eq 64).
    H > 1: loss all zero; energy ``-y^2`` (Eq 65) and ``L - 1`` zeros.
    """
    if n_hidden < 1:
        raise ValueError(f"n_hidden={n_hidden} must be >= 1.")
    sxy, syy = _chain_stats(x, y)
    if n_hidden == 1:
        loss = jnp.stack([-jnp.abs(sxy), jnp.abs(sxy)])
        root = jnp.sqrt(syy**2 + 4 * sxy**2)
        energy = jnp.stack([(-syy - root) / 2, (-syy + root) / 2])
        return loss, energy
    L = n_hidden + 1
    loss = jnp.zeros((L,), sxy.dtype)
    energy = jnp.concatenate([-syy[None], jnp.zeros((L - 1,), sxy.dtype)])
    return loss, energy


# --------------------------------------------------------------------------- zero-rank saddles


class ZeroRankSaddle(NamedTuple):
    """A critical point of ``F*`` covered by Theorem 3, with the escape direction of its proof.

    Attributes:
        weights: ``[W_1, ..., W_L]`` with ``W_L = 0`` and ``W_{L-1} ... W_1 = 0``.
        direction: ``(E, 0, ..., 0)`` in the order ``W_1..W_L``: only ``W_L`` moves, along
            ``E`` = the ``(d_y, n_{L-1})`` matrix with ones on its diagonal (Eq 67's ``I``).
        curvature: the predicted ``direction^T H_F* direction = -tr(E A E^T Sigma_yy)`` with
            ``A = I + sum_{l=2}^{L-1} W_{L-1:l} W_{L-1:l}^T`` (Eqs 68-73; ``-2c``).
    """

    weights: list
    direction: list
    curvature: Array


def zero_rank_saddle(
    widths: Sequence[int],
    x: Float[Array, "N dx"],
    y: Float[Array, "N dy"],
    *,
    nonzero: dict[int, Array | None] | None = None,
    key=None,
    scale: float = 1.0,
) -> ZeroRankSaddle:
    """Build a zero-rank critical point of ``F*`` (Theorem 3) and its escape direction.

    Args:
        widths: ``[d_x, n_1, ..., n_{L-1}, d_y]``.
        x: inputs, used for the predicted curvature.
        y: targets, alike.
        nonzero: ``{layer: W or None}`` for the layers (1-indexed, ``< L``) that are not
            zero; ``None`` draws ``W`` from ``N(0, scale^2)`` with ``key``. Default:
            ``{L-1: None}``, "all zero but W_{L-1}" (the paper's Fig 9 point). Pass ``{}``
            for the origin. ``W_L`` must stay zero and the product ``W_{L-1:1}`` must vanish.
        key: PRNG key for random layers.
        scale: standard deviation of random layers.

    Raises:
        ValueError: if the point is not of the form ``W_L = 0``, ``W_{L-1:1} = 0``.
    """
    import jax.random as jr

    widths = _check_origin_args(widths, x, y)
    L = len(widths) - 1
    nonzero = {L - 1: None} if nonzero is None else dict(nonzero)
    dtype = jnp.result_type(x)
    ws = [jnp.zeros((o, i), dtype) for i, o in zip(widths[:-1], widths[1:])]
    keys = jr.split(key, L) if key is not None else None
    for layer, w in nonzero.items():
        if not 1 <= layer < L:
            raise ValueError(
                f"nonzero has layer {layer}; only layers 1..{L - 1} may be non-zero (W_L must be 0 "
                f"for the gradient of F* to vanish, §A.3.3)."
            )
        shape = ws[layer - 1].shape
        if w is None:
            if keys is None:
                raise ValueError("a random non-zero layer needs key=jax.random.key(seed).")
            w = scale * jr.normal(keys[layer - 1], shape, dtype)
        w = jnp.asarray(w, dtype)
        if w.shape != shape:
            raise ValueError(f"nonzero[{layer}] has shape {w.shape}; W_{layer} must be {shape}.")
        ws[layer - 1] = w
    if L > 1 and float(jnp.max(jnp.abs(product(ws, L - 1, 1)))) != 0.0:
        raise ValueError(
            "the product W_{L-1} ... W_1 of these layers is not zero, so this is not a zero-rank "
            "critical point of F*; leave at least one of the layers 1..L-1 at zero."
        )
    d_y, n_last = widths[-1], widths[-2]
    e = jnp.eye(d_y, n_last, dtype=dtype)
    a = jnp.eye(n_last, dtype=dtype)
    for l in range(2, L):
        m = product(ws, L - 1, l)
        a = a + m @ m.T
    _, syy = _covariances(x, y)
    curvature = -jnp.trace(e @ a @ e.T @ syy)
    direction = [jnp.zeros_like(w) for w in ws[:-1]] + [e]
    return ZeroRankSaddle(ws, direction, curvature)


def origin_spectrum(widths: Sequence[int], x: Array, y: Array, objective: str = "energy") -> Array:
    """All ``p`` eigenvalues (ascending) of Eq 6 (``objective="loss"``) or Eq 8 (``"energy"``), in closed form.

    H = 1: grouping the weights by hidden unit (row ``a`` of ``W_1`` with column ``a`` of
    ``W_2``) makes the Hessian ``n_1`` copies of ``K = [[0, -Sigma_xy], [-Sigma_yx, B]]`` with
    ``B = 0`` (loss) or ``-Sigma_yy`` (energy). H > 1: the loss Hessian is zero and the energy
    one has ``-eig(Sigma_yy)``, each ``n_{L-1}`` times, and zeros.
    """
    widths = _check_origin_args(widths, x, y)
    if objective not in ("loss", "energy"):
        raise ValueError(f"objective={objective!r} must be 'loss' or 'energy'.")
    sxy, syy = _covariances(x, y)
    p = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    d_x, d_y = widths[0], widths[-1]
    if len(widths) == 3:
        k = jnp.zeros((d_x + d_y, d_x + d_y), sxy.dtype)
        k = k.at[:d_x, d_x:].set(-sxy).at[d_x:, :d_x].set(-sxy.T)
        if objective == "energy":
            k = k.at[d_x:, d_x:].set(-syy)
        return jnp.sort(jnp.tile(jnp.linalg.eigvalsh(k), widths[1]))
    if objective == "loss":
        return jnp.zeros((p,), sxy.dtype)
    neg = jnp.tile(-jnp.linalg.eigvalsh(syy), widths[-2])
    return jnp.sort(jnp.concatenate([neg, jnp.zeros((p - neg.size,), sxy.dtype)]))


def network_equilibrated_energy(net, x: Float[Array, "N dx"], y: Float[Array, "N dy"]) -> Float[Array, ""]:
    """:func:`equilibrated_energy` of a linear :class:`~pclandscape.MLP` (any parameterisation,
    with or without skips, any output precision; no biases): Theorem 1 in its linear maps."""
    maps, offsets = net.linear_maps()
    if offsets is not None:
        raise ValueError("network_equilibrated_energy needs an MLP without biases (Theorem 1).")
    return equilibrated_energy(list(maps), x, y, net.output_precision)


def network_origin_spectrum(net, x: Float[Array, "N dx"], y: Float[Array, "N dy"]) -> Float[Array, " p"]:
    """All ``p`` eigenvalues (ascending) of the Hessian of ``F*`` at the origin ``W = 0`` of an
    :class:`~pclandscape.MLP`, in closed form: any parameterisation (scalings ``a_l``), with or
    without skips, any output precision ``p_L``; activations with ``f(0) = 0`` and ``f'(0) = 1``
    (linear, tanh); no biases; layers predicting ``a_l W_l f(z_{l-1}) [+ z_{l-1}]``. ``net``'s
    own weights are not used (only its structure).

    At ``W = 0`` the equilibrium is ``z = 0`` (every hidden error vanishes, ``e_L = y``). The
    activity Hessian there is ``T = D^T D`` (``D`` unit lower bidiagonal, ``-1`` below the
    diagonal where layer ``l`` adds the skip ``z_{l-1}``); with ``t = T^{-1}``, the only weights
    with curvature are ``W_1`` (through ``z_1``) and ``W_L`` (through ``f(z_H) ~ z_H``), and
    grouping row ``j`` of ``W_1`` with column ``j`` of ``W_L`` makes ``H_F*`` copies of

        K = [[0, -p_L a_1 a_L t_1H Sigma_xy], [-p_L a_1 a_L t_1H Sigma_yx, -p_L^2 a_L^2 t_HH Sigma_yy]]

    (the ``W_1`` block ``a_1^2 Sigma_xx (1 - t_11)`` vanishes: ``t_11 = 1``), and zeros. Without
    skips (``t_1H = 0`` for ``H >= 2``, ``t = I``) and with ``a = p_L = 1`` this is the paper's
    Eq 8 (:func:`origin_spectrum`); with skips on every hidden layer ``t_1H = 1`` and
    ``t_HH = H``: the cross term survives at any depth, so the origin of a residual net is a
    strict saddle of ``F*`` with ``lambda_min <= -p_L a_1 a_L sigma_max(Sigma_xy)``.
    """
    from .networks import MLP

    if not isinstance(net, MLP) or net.prediction != "W f(z)":
        raise ValueError("network_origin_spectrum needs an MLP whose layers predict a_l W_l f(z_{l-1}) [+ z_{l-1}] "
                         f"(got {type(net).__name__}{'' if not isinstance(net, MLP) else ', ' + net.prediction}).")
    if net.biases is not None:
        raise ValueError("network_origin_spectrum needs an MLP without biases (they add curvature of their own).")
    zero = jnp.zeros((), jnp.result_type(float))
    if float(net.activation(zero)) != 0.0 or float(jax.grad(net.activation)(zero)) != 1.0:
        raise ValueError(f"network_origin_spectrum needs f(0) = 0 and f'(0) = 1 (linear, tanh), not "
                         f"{net.activation_name!r}: at W = 0 every activity sits at 0 (a kink of ReLU).")
    widths = _check_origin_args(net.widths, x, y)
    sxy, syy = _covariances(x, y)
    n_hidden, a, p_out = len(widths) - 2, net.scalings, net.output_precision
    d = jnp.eye(n_hidden, dtype=sxy.dtype)
    for k in range(2, n_hidden + 1):  # layer k predicts z_k from z_{k-1}
        if net.has_skip(k):
            d = d.at[k - 1, k - 2].set(-1.0)
    t = jnp.linalg.inv(d.T @ d)
    cross, last = p_out * a[0] * a[-1] * t[0, -1], p_out**2 * a[-1] ** 2 * t[-1, -1]
    n_params = sum(u * v for u, v in zip(widths[:-1], widths[1:]))
    d_x, d_y = widths[0], widths[-1]
    if n_hidden > 1 and float(cross) == 0.0:  # W_1 and W_L uncoupled: -last eig(Sigma_yy) per column of W_L
        neg = jnp.tile(-last * jnp.linalg.eigvalsh(syy), widths[-2])
        return jnp.sort(jnp.concatenate([neg, jnp.zeros((n_params - neg.size,), sxy.dtype)]))
    k = jnp.zeros((d_x + d_y, d_x + d_y), sxy.dtype)
    k = k.at[:d_x, d_x:].set(-cross * sxy).at[d_x:, :d_x].set(-cross * sxy.T).at[d_x:, d_x:].set(-last * syy)
    copies = jnp.tile(jnp.linalg.eigvalsh(k), widths[1])
    return jnp.sort(jnp.concatenate([copies, jnp.zeros((n_params - copies.size,), sxy.dtype)]))
