"""The energy's per-sample pieces (Eq 2), shared by the objectives, inference, activity
Hessians and Hessians of ``F*``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._linalg import per_sample_dot

__all__ = ["sq_norm_per_sample", "output_error", "per_sample_energies", "activity_grad", "per_sample_norm",
           "energies_and_grads", "activities_from_errors", "hidden_errors"]


def sq_norm_per_sample(e: Array) -> Array:
    return jnp.sum(jnp.reshape(e, (e.shape[0], -1)) ** 2, axis=1)


def output_error(y: Array, prediction: Array) -> Array:
    """``y - prediction`` with unobserved (NaN) targets contributing zero."""
    return jnp.where(jnp.isnan(y), 0.0, y - prediction)


def per_sample_energies(net, activities, x: Array, y: Array) -> Array:
    """Per-sample energies ``F_i`` (Eq 2 without the mean), unchecked and traceable; see
    :func:`pclandscape.sample_energies` for the checked, compiled entry point."""
    zs = (x, *activities, y)
    total = 0.0
    for layer in range(1, net.n_layers):
        total = total + sq_norm_per_sample(zs[layer] - net.predict(layer, zs[layer - 1]))
    out = sq_norm_per_sample(output_error(y, net.predict(net.n_layers, zs[-2])))
    precision = net.output_precision
    total = total + (out if precision == 1.0 else precision * out)  # the output term's precision
    return 0.5 * total


def activity_grad(net, activities, x: Array, y: Array) -> tuple[Array, ...]:
    """Per-sample activity gradients ``dF_i/dz_{l,i}`` for every hidden layer ``l``.

    Same shapes as ``activities``. This is ``N`` times the gradient of the batch-mean
    energy of Eq 2.
    """
    return jax.grad(lambda z: jnp.sum(per_sample_energies(net, z, x, y)))(tuple(activities))


def per_sample_norm(grads) -> Array:
    """``(N,)`` norms ``||dF_i/dz_i||`` over all hidden layers of each sample."""
    return jnp.sqrt(per_sample_dot(grads, grads))


def energies_and_grads(net, z, x, y):
    """Per-sample energies ``F_i`` ``(N,)`` and activity gradients ``dF_i/dz_i`` in one pass."""
    e, vjp = jax.vjp(lambda zz: per_sample_energies(net, zz, x, y), z)
    return e, vjp(jnp.ones_like(e))[0]


def activities_from_errors(net, x: Array, errors) -> tuple[Array, ...]:
    """``z(e)``: the hidden activities whose prediction errors are ``errors``,
    ``z_l = mu_l(z_{l-1}) + e_l`` with ``z_0 = x`` (a forward pass with the errors added; the
    error coordinates of :class:`pclandscape.EPC`)."""
    out, h = [], x
    for layer, e in enumerate(errors, start=1):
        h = net.predict(layer, h) + e
        out.append(h)
    return tuple(out)


def hidden_errors(net, x: Array, z) -> tuple[Array, ...]:
    """The inverse of :func:`activities_from_errors`: ``e_l = z_l - mu_l(z_{l-1})``, ``l = 1..H``."""
    prev = (x, *z[:-1])
    return tuple(a - net.predict(layer, p) for layer, (a, p) in enumerate(zip(z, prev), start=1))
