"""The two objectives of the paper: the MSE loss (Eq 1) and the PC energy (Eq 2).

Normalisations (docs/conventions.md, contract)::

    L = 1/(2N) sum_i ||y_i - f(x_i)||^2                                   (Eq 1)
    F = 1/(2N) sum_i sum_l ||z_{l,i} - f_l(z_{l-1,i})||^2,  z_0 = x, z_L = y   (Eq 2)

``activities`` are always the *free* (hidden) activities ``(z_1, ..., z_{L-1})``, each of
shape ``(N, *layer_shape)``; the input and output layers are clamped to ``x`` and ``y``.

**Missing targets.** Entries of ``y`` that are NaN are *unobserved*: they contribute nothing
to the loss or the energy (for PC this is the same as leaving those output units free, since
a free output unit settles at its prediction). This is how the matrix-completion task
(Fig 6) masks 20 % of the entries.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._energies import output_error, per_sample_energies, sq_norm_per_sample
from .networks import PCNetwork

__all__ = ["mse_loss", "pc_energy", "layer_energies", "sample_energies", "output_error"]


def check_activities(net: PCNetwork, activities: Sequence[Array], x: Array) -> tuple[Array, ...]:
    """Validate the hidden activities against the network and return them as a tuple."""
    activities = tuple(activities)
    n_hidden = net.n_layers - 1
    if len(activities) != n_hidden:
        raise ValueError(
            f"activities has {len(activities)} arrays but the network has {n_hidden} hidden "
            f"layers; pass the free activities (z_1, ..., z_{{L-1}}) only (z_0 = x and "
            f"z_L = y are clamped), e.g. the .activities of pcl.infer(...)."
        )
    for i, (a, e) in enumerate(zip(activities, _hidden_shapes(net, x))):
        if tuple(jnp.shape(a)) != e:
            raise ValueError(
                f"activities[{i}] has shape {tuple(jnp.shape(a))} but hidden layer {i + 1} of the network has "
                f"activities of shape {e} (batch first); pass arrays shaped like "
                f"net.feedforward(x)[:-1], e.g. the .activities of pcl.infer(...)."
            )
    return activities


_SHAPES: dict = {}


def _hidden_shapes(net: PCNetwork, x: Array) -> tuple[tuple[int, ...], ...]:
    """The shapes of the hidden activities ``net.feedforward(x)[:-1]``, traced abstractly (no
    arithmetic) once per network structure, leaf shapes and input shape: the trace grows with depth,
    and ``check_activities`` runs on every call of ``infer(init=...)`` and ``verify_equilibrium``."""
    leaves, treedef = jax.tree_util.tree_flatten(net)
    key = (treedef, tuple(jnp.shape(a) for a in leaves), tuple(jnp.shape(x)), str(jnp.result_type(x)))
    if key not in _SHAPES:
        if len(_SHAPES) > 256:
            _SHAPES.clear()
        out = eqx.filter_eval_shape(lambda nn, xx: nn.feedforward(xx)[:-1], net, x)
        _SHAPES[key] = tuple(tuple(e.shape) for e in out)
    return _SHAPES[key]


@eqx.filter_jit
def mse_loss(net: PCNetwork, x: Float[Array, "N ..."], y: Float[Array, "N dy"]) -> Float[Array, ""]:
    """MSE loss, Eq 1: ``1/(2N) sum_i ||y_i - f(x_i)||^2`` (contract)."""
    net.check_data(x, y)
    return 0.5 * jnp.mean(sq_norm_per_sample(output_error(y, net(x))))


@eqx.filter_jit
def sample_energies(
    net: PCNetwork, activities: Sequence[Array], x: Array, y: Array
) -> Float[Array, " N"]:
    """Per-sample energies ``F_i = 1/2 sum_l ||z_{l,i} - f_l(z_{l-1,i})||^2``, shape ``(N,)``.

    ``F = mean_i F_i`` (Eq 2). Inference moves sample ``i`` along ``-dF_i/dz_i``.
    """
    net.check_data(x, y)
    return per_sample_energies(net, check_activities(net, activities, x), x, y)


@eqx.filter_jit
def layer_energies(
    net: PCNetwork, activities: Sequence[Array], x: Array, y: Array
) -> Float[Array, " L"]:
    """Energy of each layer, ``F_l = 1/(2N) sum_i ||z_{l,i} - f_l(z_{l-1,i})||^2``, shape ``(L,)``.

    Their sum is :func:`pc_energy`. At the feedforward pass all but the last are zero and
    the last equals the MSE loss.
    """
    net.check_data(x, y)
    activities = check_activities(net, activities, x)
    zs = (x, *activities, y)
    errors = [zs[l] - net.predict(l, zs[l - 1]) for l in range(1, net.n_layers)]
    errors.append(output_error(y, net.predict(net.n_layers, zs[-2])))
    return jnp.stack([0.5 * jnp.mean(sq_norm_per_sample(e)) for e in errors])


@eqx.filter_jit
def pc_energy(
    net: PCNetwork, activities: Sequence[Array], x: Float[Array, "N ..."], y: Float[Array, "N dy"]
) -> Float[Array, ""]:
    """PC energy, Eq 2: ``1/(2N) sum_i sum_l ||z_{l,i} - f_l(z_{l-1,i})||^2`` (contract).

    Args:
        net: the network.
        activities: hidden activities ``(z_1, ..., z_{L-1})``, each ``(N, ...)``.
        x: inputs ``(N, d_x)`` (``(N, C, H, W)`` for the CNN), clamped as ``z_0``.
        y: targets ``(N, d_y)``, clamped as ``z_L``.
    """
    net.check_data(x, y)
    activities = check_activities(net, activities, x)
    return jnp.mean(per_sample_energies(net, activities, x, y))
