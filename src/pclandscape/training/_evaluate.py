"""Test-set evaluation: MSE loss and argmax accuracy."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ..networks import PCNetwork
from ..objectives import output_error

__all__ = ["evaluate"]


def _is_one_hot(y) -> bool:
    y = np.asarray(y)
    return y.ndim == 2 and y.shape[1] > 1 and bool(np.all((y == 0) | (y == 1))) and bool(np.all(y.sum(1) == 1))


@eqx.filter_jit
def _eval(net, x, y):
    out = net(x)
    loss = 0.5 * jnp.mean(jnp.sum(output_error(y, out) ** 2, axis=1))
    acc = jnp.mean(jnp.argmax(out, 1) == jnp.argmax(y, 1))
    return loss, acc


def evaluate(net: PCNetwork, x: Array, y: Array, batch_size: int = 10_000) -> tuple[float, float]:
    """Test MSE loss (Eq 1) and argmax accuracy (NaN unless ``y`` is one-hot), in chunks."""
    net.check_data(x, y)
    n = x.shape[0]
    losses, accs, ws = [], [], []
    for i in range(0, n, batch_size):
        l, a = _eval(net, x[i : i + batch_size], y[i : i + batch_size])
        losses.append(float(l))
        accs.append(float(a))
        ws.append(min(batch_size, n - i))
    loss = float(np.average(losses, weights=ws))
    acc = float(np.average(accs, weights=ws)) if _is_one_hot(y) else float("nan")
    return loss, acc

