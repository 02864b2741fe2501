"""Layer-stacked activity gradients of MLPs whose hidden layers all have one width.

For an MLP ``d_x - w x H - d_y`` (``H >= 2``) the hidden activities are held as one array
``Z`` of shape ``(H, N, w)`` and the ``H - 1`` hidden-to-hidden weights as one array of shape
``(H - 1, w, w)``. The per-sample activity gradient of the energy (Eq 2),

    dF_i/dz_l = e_l - f'(z_l) * (e_{l+1} W_{l+1}),      e_l = z_l - f(z_{l-1}) W_l^T - b_l,

(``z_0 = x`` without activation, ``e_L = y - f(z_H) W_L^T - b_L`` with unobserved targets
contributing 0) then costs two batched matrix products for all hidden-to-hidden layers plus
one product each way for the output layer, instead of one product per layer and direction
(the first layer's prediction ``x W_1^T`` is constant during inference). On a GPU, where
a PC step of the paper's nets is bound by kernel launches, this cut the kernels per Euler
step from ~21 to ~13 and the step of the 784-500x4-10 MLP from 2.6 to 1.8 ms on an H100
(``benchmarks/README.md``); the values equal the autodiff gradient up to rounding.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from .networks import PCNetwork, is_standard_mlp
from .objectives import output_error


class StackedMLP(eqx.Module):
    """The pieces of an MLP's energy gradient in stacked form (see the module docstring)."""

    activation: object = eqx.field(static=True)
    mu1: Array  # (N, w): first-layer prediction, constant during inference
    w_mid: Array  # (H - 1, w, w)
    b_mid: Array | None  # (H - 1, w)
    w_out: Array  # (d_y, w)
    b_out: Array | None  # (d_y,)
    y: Array

    def stack(self, z) -> Array:
        return jnp.stack(tuple(z))

    def unstack(self, z: Array) -> tuple[Array, ...]:
        return tuple(z[k] for k in range(z.shape[0]))

    def grad(self, z: Array) -> Array:
        """``(H, N, w)`` per-sample activity gradients ``dF_i/dz_l`` at stacked activities ``z``."""
        h, dh = jax.jvp(self.activation, (z,), (jnp.ones_like(z),))
        pred_mid = jnp.einsum("knj,kij->kni", h[:-1], self.w_mid)
        pred_out = h[-1] @ self.w_out.T
        if self.b_mid is not None:
            pred_mid = pred_mid + self.b_mid[:, None, :]
            pred_out = pred_out + self.b_out
        e_mid = z[1:] - pred_mid
        e_out = output_error(self.y, pred_out)
        e = jnp.concatenate([(z[0] - self.mu1)[None], e_mid])
        back = jnp.concatenate([jnp.einsum("kni,kij->knj", e_mid, self.w_mid), (e_out @ self.w_out)[None]])
        return e - dh * back


def stacked_mlp(net: PCNetwork, x: Array, y: Array) -> StackedMLP | None:
    """The stacked form of ``net`` for data ``(x, y)``, or None where it does not apply
    (not an MLP, fewer than two hidden layers, or hidden layers of different widths)."""
    if not is_standard_mlp(net) or net.n_layers < 3 or len(set(net.widths[1:-1])) != 1:
        return None
    ws, bs = net.weights, net.biases
    return StackedMLP(
        activation=net.activation,
        mu1=net.predict(1, x),
        w_mid=jnp.stack(ws[1:-1]),
        b_mid=None if bs is None else jnp.stack(bs[1:-1]),
        w_out=ws[-1],
        b_out=None if bs is None else bs[-1],
        y=y,
    )
