"""Networks for predictive coding: a common interface, the MLP and the CNN of §A.4.

Every network here is a chain of ``L`` layers. Layer ``l`` (1-indexed) *predicts* the
activity ``z_l`` from the previous one::

    mu_l = f_l(z_{l-1})            z_0 = x (clamped),  z_L = y (clamped in training)

and the predictive-coding energy (Eq 2) is the sum of the squared prediction errors
``||z_l - mu_l||^2``. The loss (Eq 1) uses the feedforward pass, where every ``z_l`` equals
its prediction. A network is therefore fully described by its ``predict(l, z_prev)``
method; the energy, inference, training and curvature code work for any network that
implements it (:class:`PCNetwork`).

Conventions (contract, see the README): weights are ``(out, in)`` matrices; the
MLP's layer ``l`` computes ``W_l f(z_{l-1}) (+ b_l)`` with ``f`` the identity for the first
layer, so the paper's deep linear networks are the special case ``f = id``. The paper's own
training code predicted ``f(W_l z_{l-1})`` instead (activation after the weights, linear
output layer); ``MLP(..., prediction="f(W z)")`` builds that form. The two coincide for
linear networks and give different energies for nonlinear ones.
"""

from __future__ import annotations

import abc
import copy
import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import nonnegative_number, positive_number

__all__ = [
    "PCNetwork",
    "MLP",
    "CNN",
    "Parameterisation",
    "SP",
    "MuPC",
    "NTP",
    "weights",
    "resolve_activation",
    "ACTIVATIONS",
    "PREDICTIONS",
    "is_standard_mlp",
    "has_block_closed_form",
]


def _identity(x):
    return x


ACTIVATIONS: dict[str, Callable] = {
    "linear": _identity,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
}
"""Activations known by name. Any other callable ``Array -> Array`` may be passed."""

PREDICTIONS = ("W f(z)", "f(W z)")
"""Prediction forms of an MLP layer: ``W f(z)`` (this package's default, the paper's text) or
``f(W z)`` (the paper's PyTorch code: ``Sequential(Linear(bias=False), Tanh())``)."""


def resolve_activation(activation: str | Callable) -> tuple[str, Callable]:
    """Return ``(name, function)`` for an activation given by name or as a callable.

    Raises:
        ValueError: if ``activation`` is a string that is not in :data:`ACTIVATIONS`.
    """
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation={activation!r} is not known; use one of "
                f"{sorted(ACTIVATIONS)} or pass a callable such as jax.nn.gelu."
            )
        return activation, ACTIVATIONS[activation]
    if callable(activation):
        if activation is _identity:
            return "linear", _identity
        name = getattr(activation, "__name__", type(activation).__name__)
        return name, activation
    raise ValueError(
        f"activation must be a name in {sorted(ACTIVATIONS)} or a callable, "
        f"got {type(activation).__name__}."
    )


def _check_widths(widths: Sequence[int], name: str = "widths") -> tuple[int, ...]:
    if isinstance(widths, (str, bytes)) or not hasattr(widths, "__iter__"):
        raise ValueError(f"{name} must be a sequence of positive integers such as [784, 300, 10], got {widths!r}.")
    widths = tuple(widths)
    bad = [w for w in widths if isinstance(w, bool) or not isinstance(w, (int, np.integer))]
    if bad:
        raise ValueError(f"{name}={list(widths)} must contain only positive integers ({bad[0]!r} is not an integer).")
    widths = tuple(int(w) for w in widths)
    if len(widths) < 2:
        raise ValueError(
            f"{name}={list(widths)} has fewer than two entries; give at least the input and "
            f"output widths, e.g. widths=[784, 300, 10] for one hidden layer."
        )
    if any(w <= 0 for w in widths):
        raise ValueError(f"{name}={list(widths)} must contain only positive integers.")
    return widths


def _init_matrix(key, shape, init: str, std: float | None, fan_in: int, dtype):
    if init == "zeros":
        return jnp.zeros(shape, dtype)
    if init == "normal":
        return std * jax.random.normal(key, shape, dtype)
    if init == "standard":
        return jax.random.normal(key, shape, dtype) / jnp.sqrt(fan_in).astype(dtype)
    raise ValueError(
        f"init={init!r} is not known; use 'standard' (N(0, 1/fan_in)), 'normal' "
        f"(N(0, init_std^2)) or 'zeros'."
    )


def _resolve_init(init: str | None, init_std: float | None, owner: str = "MLP") -> str:
    if init_std is not None:
        nonnegative_number(owner, "init_std", init_std)
    if init is None:
        return "normal" if init_std is not None else "standard"
    if init == "normal" and init_std is None:
        raise ValueError("init='normal' needs init_std, the standard deviation sigma of N(0, sigma^2).")
    return init


class Parameterisation(eqx.Module):
    """How an MLP scales its layers: layer ``l`` predicts ``a_l W_l f(z_{l-1})`` with the raw
    weights ``W_l`` stored (``pcl.weights`` returns them) and the factors ``a_l`` applied in the
    predictions. ``gamma`` (optional) divides the output layer's factor.

    The factors follow the muPC paper (Innocenti, Achour, Buckley, NeurIPS 2025,
    arXiv:2505.13124) as implemented in jpc 1.0 (``jpc/_core/_energies.py``,
    ``_get_param_scalings``), with ``D`` the input width, ``N`` the first hidden width and
    ``L`` the number of weight layers: :class:`SP` all 1; :class:`MuPC` ``a_1 = 1/sqrt(D)``,
    ``a_l = 1/sqrt(N)`` (``1/sqrt(N L)`` with skip connections) for ``1 < l < L``,
    ``a_L = 1/N``; :class:`NTP` the same but ``a_L = 1/sqrt(N)``.
    """

    gamma: float | None = None

    def __check_init__(self):
        if self.gamma is not None:
            positive_number(type(self).__name__, "gamma", self.gamma)

    def scalings(self, widths: Sequence[int], residual: bool) -> tuple[float, ...]:
        """``(a_1, ..., a_L)`` for an MLP of these ``widths`` (with skips if ``residual``)."""
        a = list(self._base(tuple(widths), residual))
        if self.gamma is not None:
            a[-1] = a[-1] / self.gamma
        return tuple(float(v) for v in a)

    @abc.abstractmethod
    def _base(self, widths, residual) -> list[float]:
        """The factors before ``gamma``."""


class SP(Parameterisation):
    """The standard parameterisation: every ``a_l = 1`` (``a_L = 1/gamma`` if ``gamma``)."""

    def _base(self, widths, residual):
        return [1.0] * (len(widths) - 1)


class MuPC(Parameterisation):
    """muPC (arXiv:2505.13124, jpc ``param_type="mupc"``): ``a_1 = 1/sqrt(D)``, hidden
    ``1/sqrt(N)`` or ``1/sqrt(N L)`` with skips, output ``a_L = 1/(N gamma)``."""

    def _base(self, widths, residual):
        return _depth_mu_scalings(widths, residual, last=1.0 / widths[1])


class NTP(Parameterisation):
    """The neural tangent parameterisation (jpc ``param_type="ntp"``): as :class:`MuPC` but the
    output layer ``a_L = 1/(sqrt(N) gamma)``."""

    def _base(self, widths, residual):
        return _depth_mu_scalings(widths, residual, last=1.0 / math.sqrt(widths[1]))


def _depth_mu_scalings(widths, residual, last):
    n_layers = len(widths) - 1
    if n_layers == 1:  # no hidden layer: the single layer is the output layer
        return [last]
    hidden = 1.0 / math.sqrt(widths[1] * n_layers) if residual else 1.0 / math.sqrt(widths[1])
    return [1.0 / math.sqrt(widths[0])] + [hidden] * (n_layers - 2) + [last]


class PCNetwork(eqx.Module):
    """Interface of a network that can be trained by backprop and by predictive coding.

    Subclasses hold their weight matrices/kernels in ``weights`` (a tuple, layer order) and
    optional biases in ``biases``, and implement :meth:`predict`.
    """

    weights: eqx.AbstractVar[tuple[Array, ...]]
    biases: eqx.AbstractVar[tuple[Array, ...] | None]
    activation_name: eqx.AbstractVar[str]

    @abc.abstractmethod
    def predict(self, layer: int, z_prev: Array) -> Array:
        """Prediction ``mu_layer = f_layer(z_{layer-1})`` for a batch; ``layer`` is 1..L."""

    @property
    @abc.abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample (without the batch axis)."""

    @property
    @abc.abstractmethod
    def output_dim(self) -> int:
        """Width of the output layer (d_y)."""

    @property
    def n_layers(self) -> int:
        """Number of weight layers L (the number of hidden layers is H = L - 1)."""
        return len(self.weights)

    @property
    def is_linear(self) -> bool:
        """True for a deep linear network (identity activation everywhere)."""
        return self.activation_name == "linear"

    @property
    def output_precision(self) -> float:
        """Weight of the output layer's term in the energy (the precision of the generative
        model at the output; 1 unless the network sets it)."""
        return 1.0

    def feedforward(self, x: Array) -> tuple[Array, ...]:
        """All activities of the feedforward pass ``(z_1, ..., z_L)`` for inputs ``x``."""
        zs = []
        z = x
        for layer in range(1, self.n_layers + 1):
            z = self.predict(layer, z)
            zs.append(z)
        return tuple(zs)

    def __call__(self, x: Array) -> Array:
        """Network output ``f(x)`` for a batch ``x`` of shape ``(N, *input_shape)``."""
        return self.feedforward(x)[-1]

    def with_weights(self, weights: Sequence[Array]) -> "PCNetwork":
        """A copy of this network with its weights replaced (shapes must match)."""
        weights = tuple(weights)
        if len(weights) != self.n_layers:
            raise ValueError(
                f"weights has {len(weights)} arrays but the network has {self.n_layers} layers."
            )
        for i, (w, w0) in enumerate(zip(weights, self.weights)):
            if jnp.shape(w) != w0.shape:
                raise ValueError(
                    f"weights[{i}] has shape {jnp.shape(w)}, expected {w0.shape} (W_{i + 1})."
                )
        return eqx.tree_at(lambda n: n.weights, self, weights)

    def with_prediction(self, prediction: str) -> "PCNetwork":
        """A copy of this network (same weights) whose layers predict in the form ``prediction``
        (see :data:`PREDICTIONS`)."""
        if not hasattr(self, "prediction"):
            raise ValueError(f"{type(self).__name__} has one prediction form only.")
        new = copy.copy(self)
        object.__setattr__(new, "prediction", _check_prediction(prediction))  # a static field: not a leaf
        return new

    def check_data(self, x: Array, y: Array | None = None) -> None:
        """Raise a ``ValueError`` naming the argument if ``x`` or ``y`` do not fit the net."""
        xs, exp = tuple(jnp.shape(x)), self.input_shape
        if len(xs) == len(exp) + 1 and xs[0] == 0:
            raise ValueError("x holds no samples (batch of size 0); pass at least one sample.")
        if len(xs) != len(exp) + 1 or xs[1:] != exp:
            raise ValueError(
                f"x has shape {xs} but this {type(self).__name__} takes inputs of shape "
                f"(N, {', '.join(map(str, exp))}); reshape the data (MLPs take flattened "
                f"inputs) or build the network for this input size."
            )
        if y is not None:
            ys = tuple(jnp.shape(y))
            if len(ys) != 2 or ys[1] != self.output_dim:
                raise ValueError(
                    f"y has shape {ys} but the network's output width is {self.output_dim}; "
                    f"pass y of shape (N, {self.output_dim}) (one-hot labels for "
                    f"classification) or build the network with that output width."
                )
            if ys[0] != xs[0]:
                raise ValueError(
                    f"x and y have different batch sizes ({xs[0]} and {ys[0]}); pass one "
                    f"target row per input sample."
                )


class MLP(PCNetwork):
    """Fully connected network: layer ``l`` computes ``W_l f(z_{l-1}) (+ b_l)``.

    ``f`` is the activation for every layer but the first, where it is the identity
    (the input is not passed through ``f``); the output layer is therefore linear in
    ``f(z_{L-1})``. With ``activation="linear"`` this is the deep linear network of §2.1,
    ``f(x) = W_L ... W_1 x``.

    With ``prediction="f(W z)"`` layer ``l < L`` computes ``f(W_l z_{l-1} + b_l)`` and the
    output layer ``W_L z_{L-1} + b_L``: the layers of the paper's PyTorch notebooks
    (``nn.Sequential(nn.Linear(n_in, n_out, bias=False), nn.Tanh())``, the last one a bare
    ``Linear``). The hidden activities are then post-activation values. Both forms give the
    same feedforward function class; their energies differ for nonlinear ``f``.

    Args:
        key: PRNG key for the initialisation (ignored for ``init="zeros"``; may be None then).
        widths: ``[n_0 = d_x, n_1, ..., n_L = d_y]``; at least two entries.
        activation: ``"linear"``, ``"tanh"``, ``"relu"`` or any callable.
        use_bias: add a bias to every layer (the paper uses none).
        init_std: if given, weights are drawn from ``N(0, init_std^2)`` (the paper's
            near-origin initialisation; e.g. ``init_std=sqrt(5e-3)``).
        init: ``"standard"`` (default: ``N(0, 1/fan_in)``), ``"normal"`` (needs
            ``init_std``) or ``"zeros"``.
        dtype: floating dtype of the parameters (default: JAX's default float).
        prediction: ``"W f(z)"`` (default) or ``"f(W z)"`` (see above).

    Build a network from given matrices with :meth:`MLP.from_weights`.
    """

    weights: tuple[Array, ...]
    biases: tuple[Array, ...] | None
    widths: tuple[int, ...] = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)
    activation_name: str = eqx.field(static=True)
    prediction: str = eqx.field(static=True, default="W f(z)")
    residual: bool = eqx.field(static=True, default=False)
    param: Parameterisation = eqx.field(static=True, default=SP())
    scalings: tuple[float, ...] = eqx.field(static=True, default=())
    precision: float = eqx.field(static=True, default=1.0)

    def __init__(
        self,
        key: PRNGKeyArray | None,
        widths: Sequence[int],
        activation: str | Callable = "linear",
        use_bias: bool = False,
        init_std: float | None = None,
        *,
        init: str | None = None,
        dtype=None,
        prediction: str = "W f(z)",
        residual: bool = False,
        param: Parameterisation | None = None,
        output_precision: float = 1.0,
    ):
        widths = _check_widths(widths)
        init = _resolve_init(init, init_std)
        self.prediction = _check_prediction(prediction)
        self.residual = bool(residual)
        if residual and len(set(widths[1:-1])) > 1:
            raise ValueError(f"residual=True needs equal hidden widths (identity skips between hidden layers), got "
                             f"widths={list(widths)}.")
        param = SP() if param is None else param
        if not isinstance(param, Parameterisation):
            raise ValueError(f"param={param!r} must be pcl.SP(), pcl.MuPC() or pcl.NTP().")
        self.param = param
        self.scalings = param.scalings(widths, self.residual)
        positive_number("MLP", "output_precision", output_precision)
        self.precision = float(output_precision)
        dtype = dtype or jnp.zeros(()).dtype
        self.activation_name, self.activation = resolve_activation(activation)
        self.widths = widths
        if key is None and init != "zeros":
            raise ValueError(f"key is None but init={init!r} is random; pass jax.random.key(seed).")
        keys = jax.random.split(key, len(widths) - 1) if key is not None else [None] * (len(widths) - 1)
        self.weights = tuple(
            _init_matrix(k, (n_out, n_in), init, init_std, n_in, dtype)
            for k, n_in, n_out in zip(keys, widths[:-1], widths[1:])
        )
        self.biases = tuple(jnp.zeros((n,), dtype) for n in widths[1:]) if use_bias else None

    @classmethod
    def from_weights(
        cls,
        weights: Sequence[Float[Array, "out in"]],
        activation: str | Callable = "linear",
        biases: Sequence[Float[Array, " out"]] | None = None,
        prediction: str = "W f(z)",
        **options,
    ) -> "MLP":
        """Build an MLP whose layer ``l`` uses the given ``(n_l, n_{l-1})`` matrix ``W_l``
        (``options``: ``residual``, ``param``, ``output_precision`` as in the constructor)."""
        weights = [jnp.asarray(w) for w in weights]
        if len(weights) < 1:
            raise ValueError("weights is empty; pass the list [W_1, ..., W_L].")
        for i, w in enumerate(weights):
            if w.ndim != 2:
                raise ValueError(f"weights[{i}] has shape {w.shape}; each W_l must be a 2-D (out, in) matrix.")
        for i in range(1, len(weights)):
            if weights[i].shape[1] != weights[i - 1].shape[0]:
                raise ValueError(
                    f"weights[{i}] has shape {weights[i].shape} but weights[{i - 1}] has "
                    f"{weights[i - 1].shape}: W_{i + 1} must have {weights[i - 1].shape[0]} columns."
                )
        widths = [weights[0].shape[1]] + [w.shape[0] for w in weights]
        net = cls(None, widths, activation, use_bias=biases is not None, init="zeros", dtype=weights[0].dtype,
                  prediction=prediction, **options)
        net = eqx.tree_at(lambda n: n.weights, net, tuple(weights))
        if biases is not None:
            biases = tuple(jnp.asarray(b) for b in biases)
            if [b.shape for b in biases] != [(n,) for n in widths[1:]]:
                raise ValueError(f"biases must have shapes {[(n,) for n in widths[1:]]}.")
            net = eqx.tree_at(lambda n: n.biases, net, biases)
        return net

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.widths[0],)

    @property
    def output_dim(self) -> int:
        return self.widths[-1]

    @property
    def output_precision(self) -> float:
        return self.precision

    def has_skip(self, layer: int) -> bool:
        """Whether layer ``layer`` (1..L) adds ``z_{layer-1}``: hidden-to-hidden layers of a
        residual MLP (none from the input, none into the output, as in muPC)."""
        return self.residual and 1 < layer < self.n_layers

    def predict(self, layer: int, z_prev: Array) -> Array:
        """``mu_l = a_l (f(z_{l-1}) W_l^T + b_l) [+ z_{l-1}]`` for a batch ``z_prev`` of shape
        ``(N, n_{l-1})``: ``a_l`` the parameterisation's factor (1 for :class:`SP`), the skip
        ``z_{l-1}`` on hidden-to-hidden layers of a residual MLP. Under
        ``prediction="f(W z)"`` hidden layers predict ``f(a_l (z_{l-1} W_l^T + b_l)) [+ z_{l-1}]``."""
        after = self.prediction == "f(W z)"
        h = z_prev if (layer == 1 or after) else self.activation(z_prev)
        out = h @ self.weights[layer - 1].T
        if self.biases is not None:
            out = out + self.biases[layer - 1]
        a = self.scalings[layer - 1]
        if a != 1.0:
            out = a * out
        if after and layer < self.n_layers:
            out = self.activation(out)
        if self.has_skip(layer):
            out = out + z_prev
        return out

    def scaled_weights(self) -> tuple[Array, ...]:
        """``(a_1 W_1, ..., a_L W_L)``: the weights with the parameterisation's factors applied
        (the raw ``W_l`` for :class:`SP`)."""
        if all(a == 1.0 for a in self.scalings):
            return tuple(self.weights)
        return tuple(a * w for a, w in zip(self.scalings, self.weights))

    def linear_maps(self) -> tuple[tuple[Array, ...], tuple[Array, ...] | None]:
        """For a linear MLP, the matrices ``M_l`` and offsets ``c_l`` with
        ``mu_l = M_l z_{l-1} + c_l``: ``M_l = a_l W_l (+ I on skip layers)``, ``c_l = a_l b_l``.
        They are what every closed form of a linear network is written in (Theorem 1's
        ``W_{L:l}`` become products of ``M_l``)."""
        if not self.is_linear:
            raise ValueError("linear_maps() is defined for linear MLPs (activation='linear') only.")
        maps = []
        for layer, w in enumerate(self.weights, start=1):
            m = self.scalings[layer - 1] * w
            if self.has_skip(layer):
                m = m + jnp.eye(w.shape[0], dtype=w.dtype)
            maps.append(m)
        offsets = None
        if self.biases is not None:
            offsets = tuple(a * b for a, b in zip(self.scalings, self.biases))
        return tuple(maps), offsets


def _check_prediction(prediction) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(
            f"prediction={prediction!r} is not known; use 'W f(z)' (activation before the weights, the "
            f"default) or 'f(W z)' (activation after the weights, as in the paper's PyTorch code)."
        )
    return prediction


def has_block_closed_form(net) -> bool:
    """True for an :class:`MLP` whose layers predict ``a_l W_l f(z) [+ z]`` (any
    parameterisation, skips and output precision; any linear MLP): the closed-form
    block-tridiagonal activity Hessian (:mod:`pclandscape.activity_hessian`), its products
    and the kink iteration are written for these; ``f(W z)`` networks and CNNs use autodiff."""
    return isinstance(net, MLP) and (net.prediction == "W f(z)" or net.is_linear)


def is_standard_mlp(net) -> bool:
    """True for a plain :class:`MLP`: layers predicting ``W f(z)`` (any linear MLP qualifies),
    no skips, every scaling 1 and output precision 1.

    The closed forms of this package (block-tridiagonal activity Hessians, the layer-stacked
    Euler step, the kink iteration of ReLU nets, the first-layer reduction of Hessians) are
    written for that form; other networks go through autodiff.
    """
    return (
        isinstance(net, MLP)
        and (net.prediction == "W f(z)" or net.is_linear)
        and not net.residual
        and all(a == 1.0 for a in net.scalings)
        and net.output_precision == 1.0
    )


def _max_pool(z: Array) -> Array:
    """2x2 max pooling with stride 2 on ``(N, C, H, W)``."""
    return jax.lax.reduce_window(z, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")


class CNN(PCNetwork):
    """The convolutional network of §A.4: 3 blocks of (conv 3x3, max-pool 2x2), then 2 FC layers.

    Layers (``f`` the activation, the identity on the input)::

        mu_1 = pool(conv(x,        K_1))              (N, c1, 16, 16)
        mu_2 = pool(conv(f(z_1),   K_2))              (N, c2,  8,  8)
        mu_3 = pool(conv(f(z_2),   K_3))              (N, c3,  4,  4)
        mu_4 = W_4 f(flatten(z_3))                    (N, hidden)
        mu_5 = W_5 f(z_4)                             (N, n_classes)   last layer linear in f(z_4)

    Each block is one predictive-coding layer, so the energy has 5 terms. Kernels are
    ``(out_channels, in_channels, 3, 3)``, 'SAME' padding. With ``prediction="f(W z)"`` the
    activation moves after the weights, as in the paper's notebook (``Conv2d, Tanh/ReLU,
    MaxPool2d`` blocks, ``Linear, act`` and a bare ``Linear``): ``mu_l = pool(f(conv(z_{l-1},
    K_l)))``, ``mu_4 = f(W_4 flatten(z_3))``, ``mu_5 = W_5 z_4``. For a non-decreasing ``f``
    (tanh, ReLU) max-pooling commutes with ``f``, so both forms compute the same function.

    Args:
        key: PRNG key.
        activation: as for :class:`MLP`.
        channels: output channels of the three conv blocks.
        hidden: width of the first fully connected layer.
        n_classes: output width.
        in_shape: ``(C, H, W)`` of the input; H and W divisible by 8.
        use_bias: ``True`` for a bias on every layer, ``False`` (the default) for none, or
            one bool per layer (5), e.g. ``(True, True, True, False, False)`` for biases on
            the conv blocks only, as the paper's notebook (PyTorch's ``Conv2d`` has a bias by
            default, its ``Linear(bias=False)`` none). Biases start at zero; ``biases[l]`` is
            ``None`` for a layer without one. In a block the bias is added to the convolution,
            before the activation and the pooling.
        init_std: as for :class:`MLP`.
        init: as for :class:`MLP` (the fan-in of a kernel is ``in_channels * 9``).
        dtype: as for :class:`MLP`.
    """

    weights: tuple[Array, ...]
    biases: tuple[Array | None, ...] | None
    activation: Callable = eqx.field(static=True)
    activation_name: str = eqx.field(static=True)
    in_shape: tuple[int, int, int] = eqx.field(static=True)
    n_classes: int = eqx.field(static=True)
    prediction: str = eqx.field(static=True, default="W f(z)")

    def __init__(
        self,
        key: PRNGKeyArray | None,
        activation: str | Callable = "relu",
        channels: Sequence[int] = (32, 64, 128),
        hidden: int = 128,
        n_classes: int = 10,
        in_shape: Sequence[int] = (3, 32, 32),
        use_bias: bool | Sequence[bool] = False,
        init_std: float | None = None,
        *,
        init: str | None = None,
        dtype=None,
        prediction: str = "W f(z)",
    ):
        self.prediction = _check_prediction(prediction)
        if isinstance(use_bias, (bool, np.bool_)):
            use_bias = (bool(use_bias),) * 5
        elif (isinstance(use_bias, str) or not isinstance(use_bias, Sequence) or len(use_bias) != 5
              or not all(isinstance(b, (bool, np.bool_)) for b in use_bias)):
            raise ValueError(f"use_bias={use_bias!r} must be a bool or one bool per layer (5: three conv "
                             "blocks, two fully connected layers), e.g. (True, True, True, False, False).")
        channels = tuple(int(c) for c in channels)
        in_shape = tuple(int(s) for s in in_shape)
        if len(channels) != 3:
            raise ValueError(f"channels={channels} must give the output channels of exactly 3 conv blocks.")
        if len(in_shape) != 3 or in_shape[1] % 8 or in_shape[2] % 8:
            raise ValueError(f"in_shape={in_shape} must be (C, H, W) with H and W divisible by 8.")
        init = _resolve_init(init, init_std, "CNN")
        dtype = dtype or jnp.zeros(()).dtype
        self.activation_name, self.activation = resolve_activation(activation)
        self.in_shape = in_shape
        self.n_classes = int(n_classes)
        if key is None and init != "zeros":
            raise ValueError(f"key is None but init={init!r} is random; pass jax.random.key(seed).")
        keys = jax.random.split(key, 5) if key is not None else [None] * 5
        c_in = (in_shape[0],) + channels[:2]
        kernels = [
            _init_matrix(k, (co, ci, 3, 3), init, init_std, ci * 9, dtype)
            for k, ci, co in zip(keys[:3], c_in, channels)
        ]
        flat = channels[2] * (in_shape[1] // 8) * (in_shape[2] // 8)
        fc = [
            _init_matrix(keys[3], (hidden, flat), init, init_std, flat, dtype),
            _init_matrix(keys[4], (n_classes, hidden), init, init_std, hidden, dtype),
        ]
        self.weights = tuple(kernels + fc)
        if any(use_bias):
            self.biases = tuple(jnp.zeros((n,), dtype) if b else None
                                for n, b in zip((*channels, hidden, n_classes), use_bias))
        else:
            self.biases = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.in_shape

    @property
    def output_dim(self) -> int:
        return self.n_classes

    def predict(self, layer: int, z_prev: Array) -> Array:
        after = self.prediction == "f(W z)"
        post = self.activation if after and layer < 5 else (lambda a: a)
        h = z_prev if (layer == 1 or after) else self.activation(z_prev)
        w = self.weights[layer - 1]
        b = None if self.biases is None else self.biases[layer - 1]
        if layer <= 3:
            out = jax.lax.conv_general_dilated(
                h, w, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")
            )
            if b is not None:
                out = out + b[:, None, None]
            return _max_pool(post(out))
        if layer == 4:
            h = h.reshape(h.shape[0], -1)
        out = h @ w.T
        if b is not None:
            out = out + b
        return post(out)


def weights(net: PCNetwork) -> list[Array]:
    """The weights ``[W_1, ..., W_L]`` of a network (contract).

    For an MLP each ``W_l`` is an ``(n_l, n_{l-1})`` matrix; for the CNN the first three
    are conv kernels. The flat parameter vector used by every Hessian is their row-major
    concatenation (``jax.flatten_util.ravel_pytree`` of this list).
    """
    if not isinstance(net, PCNetwork):
        raise ValueError(f"net must be a pclandscape network (MLP or CNN), got {type(net).__name__}.")
    return list(net.weights)
