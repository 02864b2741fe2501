"""Training by backprop (BP) and by predictive coding (PC), and the training history.

* :func:`bp_step`: one optax update along the gradient of the MSE loss (Eq 1).
* :func:`pc_step`: inference to equilibrium with a solver (Eq 3), then one optax update
  along the weight gradient of the energy (Eq 2) at the equilibrium activities (Eq 4).
  At an exact equilibrium this is the gradient of ``F*(theta)`` (the envelope theorem:
  ``dF*/dtheta = dF/dtheta + dF/dz dz*/dtheta`` and ``dF/dz = 0``).

Both are jit-compiled and can be called from user code. ``grad_scale`` multiplies the
gradient before the optimizer sees it (used by the experiments' ``protocol="paper"``, which
reproduces the different gradient scalings of the paper's BP and PC code; ``1.0`` means
Eqs 1 and 2 exactly).

:func:`train` runs either rule over batches of data with evaluation, progress display,
checkpoints, and a clear error if the run diverges.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray

from ._progress import Progress
from .errors import DivergenceError
from .inference import AbstractSolver, Euler, _infer, default_solver
from .networks import PCNetwork
from .objectives import mse_loss, output_error, pc_energy

__all__ = ["StepInfo", "bp_step", "pc_step", "init_opt_state", "train", "History", "evaluate"]


class StepInfo(eqx.Module):
    """Diagnostics of one training step (all scalars, measured before the update).

    Attributes:
        loss: MSE loss (Eq 1) of the batch at the feedforward pass.
        energy: energy (Eq 2) at the inference equilibrium (PC); NaN for BP.
        grad_norm: L2 norm of the weight gradient of the rule's objective (Eq 1 for BP,
            Eq 2 at the equilibrium for PC), before ``grad_scale``.
        inference_grad_norm: inference residual ``max_i ||dF_i/dz_i||`` (PC); NaN for BP.
        converged: whether inference reached its tolerance (PC); True for BP.
    """

    loss: Array
    energy: Array
    grad_norm: Array
    inference_grad_norm: Array
    converged: Array


def _params(net):
    return eqx.filter(net, eqx.is_inexact_array)


def init_opt_state(net: PCNetwork, optimizer: optax.GradientTransformation):
    """``optimizer.init`` on the trainable arrays (weights and biases) of ``net``."""
    return optimizer.init(_params(net))


def _global_norm(tree) -> Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(tree)))


def _apply(net, grads, opt_state, optimizer, grad_scale):
    gnorm = _global_norm(grads)
    if grad_scale != 1.0:
        grads = jax.tree_util.tree_map(lambda g: grad_scale * g, grads)
    updates, opt_state = optimizer.update(grads, opt_state, _params(net))
    return eqx.apply_updates(net, updates), opt_state, gnorm


@eqx.filter_jit
def _bp_step(net, opt_state, x, y, optimizer, grad_scale):
    loss, grads = eqx.filter_value_and_grad(mse_loss)(net, x, y)
    net, opt_state, gnorm = _apply(net, grads, opt_state, optimizer, grad_scale)
    nan = jnp.full((), jnp.nan, loss.dtype)
    return net, opt_state, StepInfo(loss, nan, gnorm, nan, jnp.asarray(True))


@eqx.filter_jit
def _pc_step(net, opt_state, x, y, optimizer, solver, grad_scale):
    eq = _infer(net, x, y, solver, None)
    z = jax.lax.stop_gradient(eq.activities)
    energy, grads = eqx.filter_value_and_grad(lambda n: pc_energy(n, z, x, y))(net)
    loss = mse_loss(net, x, y)
    net, opt_state, gnorm = _apply(net, grads, opt_state, optimizer, grad_scale)
    return net, opt_state, StepInfo(loss, energy, gnorm, eq.grad_norm, eq.converged)


def bp_step(
    net: PCNetwork,
    opt_state,
    x: Array,
    y: Array,
    optimizer: optax.GradientTransformation,
    *,
    grad_scale: float = 1.0,
) -> tuple[PCNetwork, Any, StepInfo]:
    """One backprop step: ``theta <- optimizer(grad_scale * dL/dtheta)`` with ``L`` of Eq 1.

    Returns ``(net, opt_state, StepInfo)``. Jit-compiled (the optimizer is static).
    """
    net.check_data(x, y)
    return _bp_step(net, opt_state, x, y, optimizer, float(grad_scale))


def pc_step(
    net: PCNetwork,
    opt_state,
    x: Array,
    y: Array,
    optimizer: optax.GradientTransformation,
    solver: AbstractSolver | None = None,
    *,
    grad_scale: float = 1.0,
) -> tuple[PCNetwork, Any, StepInfo]:
    """One PC step: inference to equilibrium, then ``theta <- optimizer(grad_scale * dF/dtheta|_{z*})``.

    ``F`` is the energy of Eq 2 (mean over the batch) and ``z*`` the activities found by
    ``solver`` (default :func:`pcl.default_solver <pclandscape.default_solver>`), held fixed.
    Returns ``(net, opt_state, StepInfo)``. Jit-compiled.
    """
    net.check_data(x, y)
    solver = (default_solver(net) if solver is None else solver).prepare(net, y)
    return _pc_step(net, opt_state, x, y, optimizer, solver, float(grad_scale))


# --------------------------------------------------------------------------- history


@dataclass
class History:
    """What :func:`train` measured. Arrays are NumPy; ``step`` is 0-based.

    Attributes:
        rule: ``"pc"`` or ``"bp"``.
        loss, energy, grad_norm, inference_grad_norm: per training step (see
            :class:`StepInfo`).
        eval_step: the steps (number of updates done) at which the test set was evaluated.
        test_loss, test_accuracy: MSE loss and argmax accuracy (NaN for non-one-hot targets)
            at those steps.
        meta: free-form settings (optimizer, solver, seed, ...), JSON-serialisable.
    """

    rule: str
    loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    energy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    grad_norm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    inference_grad_norm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    eval_step: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    test_loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    test_accuracy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    meta: dict = field(default_factory=dict)

    _ARRAYS = (
        "loss",
        "energy",
        "grad_norm",
        "inference_grad_norm",
        "eval_step",
        "test_loss",
        "test_accuracy",
    )

    def __len__(self) -> int:
        return len(self.loss)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (NaN written as null)."""
        out = {"rule": self.rule, "meta": self.meta}
        for name in self._ARRAYS:
            arr = np.asarray(getattr(self, name))
            out[name] = [None if isinstance(v, float) and not math.isfinite(v) else v for v in arr.tolist()]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        kw = {}
        for name in cls._ARRAYS:
            vals = [np.nan if v is None else v for v in d.get(name, [])]
            dtype = np.int64 if name == "eval_step" else np.float64
            kw[name] = np.asarray(vals, dtype=dtype)
        return cls(rule=d["rule"], meta=d.get("meta", {}), **kw)

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``.json`` or ``.npz`` (by suffix), atomically. Returns the path."""
        path = Path(path)
        if path.suffix not in (".json", ".npz"):
            raise ValueError(f"path={str(path)!r} must end in .json or .npz.")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                if path.suffix == ".json":
                    f.write(json.dumps(self.to_dict()).encode())
                else:
                    arrays = {name: np.asarray(getattr(self, name)) for name in self._ARRAYS}
                    np.savez(f, rule=np.asarray(self.rule), meta=np.asarray(json.dumps(self.meta)), **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "History":
        """Read a history written by :meth:`save`."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no history at {path}")
        if path.suffix == ".json":
            return cls.from_dict(json.loads(path.read_text()))
        with np.load(path, allow_pickle=False) as f:
            kw = {name: f[name] for name in cls._ARRAYS}
            return cls(rule=str(f["rule"]), meta=json.loads(str(f["meta"])), **kw)


# --------------------------------------------------------------------------- data


def _array_batches(x, y, batch_size: int, key, start_step: int):
    n = x.shape[0]
    if batch_size > n:
        raise ValueError(
            f"batch_size={batch_size} is larger than the data set ({n} samples); lower it."
        )
    n_batches = n // batch_size
    step = start_step
    while True:
        epoch, offset = divmod(step, n_batches)
        if key is None:
            perm = np.arange(n)
        else:
            perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), n))
        while offset < n_batches:
            idx = perm[offset * batch_size : (offset + 1) * batch_size]
            yield x[idx], y[idx]
            offset += 1
            step += 1


def _iter_batches(data, batch_size, key, start_step):
    if isinstance(data, (tuple, list)) and len(data) == 2 and hasattr(data[0], "shape"):
        x, y = jnp.asarray(data[0]), jnp.asarray(data[1])
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"data has {x.shape[0]} inputs but {y.shape[0]} targets.")
        return _array_batches(x, y, batch_size, key, start_step)
    if isinstance(data, Iterable):

        def gen():
            skipped = 0
            while True:
                empty = True
                for batch in data:
                    empty = False
                    if skipped < start_step:
                        skipped += 1
                        continue
                    yield batch
                if empty:
                    raise ValueError("data yielded no batches.")

        return gen()
    raise ValueError(
        "data must be a pair (x, y) of arrays or an iterable of (x, y) batches, "
        f"got {type(data).__name__}."
    )


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


# --------------------------------------------------------------------------- train


def _diverged_message(rule, step, info: StepInfo, optimizer_name, solver) -> str:
    what = ", ".join(
        f"{k}={float(v):.3g}" for k, v in (("loss", info.loss), ("energy", info.energy), ("grad_norm", info.grad_norm))
        if not (k == "energy" and rule == "bp")
    )
    cause = "the learning rate is probably too large: lower it"
    if rule == "pc" and isinstance(solver, Euler):
        cause += (
            f", or the inference step size dt={solver.dt} is too large for the current weights "
            f"(Euler is unstable when dt * lambda_max(d^2F/dz^2) > 2): lower dt or use pcl.Heun()"
        )
    return (
        f"Training ({rule.upper()}) diverged at step {step}: {what}. Likely cause: {cause}. "
        f"The error carries .history and .net up to the last finite step."
    )


def train(
    net: PCNetwork,
    data,
    *,
    rule: str = "pc",
    optimizer: optax.GradientTransformation | None = None,
    solver: AbstractSolver | None = None,
    steps: int,
    until_loss: float | None = None,
    batch_size: int = 64,
    key: PRNGKeyArray | None = None,
    eval_data: tuple[Array, Array] | None = None,
    eval_every: int | None = None,
    grad_scale: float = 1.0,
    progress: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    meta: dict | None = None,
) -> tuple[PCNetwork, History]:
    """Train ``net`` with backprop (``rule="bp"``) or predictive coding (``rule="pc"``).

    Args:
        net: the network to train.
        data: ``(x, y)`` arrays (cut into shuffled batches of ``batch_size``, a new seeded
            permutation every epoch, incomplete last batch dropped) or any re-iterable of
            ``(x, y)`` batches.
        rule: ``"pc"`` or ``"bp"``.
        optimizer: an optax optimizer (default ``optax.sgd(1e-3)``, the paper's).
        solver: inference solver for PC (default :func:`pclandscape.default_solver`).
        steps: maximum number of weight updates.
        until_loss: stop early once the batch loss (Eq 1) falls below this value.
        batch_size: batch size when ``data`` is a pair of arrays.
        key: PRNG key for shuffling (None: no shuffling).
        eval_data: ``(x_test, y_test)`` evaluated every ``eval_every`` steps and at the end.
        eval_every: evaluation period in steps (default: only at the start and the end).
        grad_scale: factor applied to the gradient (see the module docstring).
        progress: show a progress bar (default: when stderr is a terminal).
        checkpoint: file to save ``(net, opt_state, history)`` to every
            ``checkpoint_every`` steps and at the end; if it exists, training resumes from
            it (with the same data order when ``data`` is arrays and ``key`` is given).
        meta: extra JSON-serialisable settings stored in ``History.meta``.

    Returns:
        ``(trained net, History)``.

    Raises:
        ValueError: unknown rule, bad data or batch size.
        DivergenceError: the loss, energy or gradient became NaN/inf; it names the step
            and carries the history and network up to the last finite step.
    """
    if rule not in ("pc", "bp"):
        raise ValueError(f"rule={rule!r} is not known; use 'pc' (predictive coding) or 'bp' (backprop).")
    if not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps={steps!r} must be a non-negative integer (the maximum number of updates).")
    optimizer = optax.sgd(1e-3) if optimizer is None else optimizer
    if rule == "pc":
        solver = default_solver(net) if solver is None else solver
        solver.check(net)  # per-batch preparation (e.g. missing targets) happens in pc_step
    if eval_data is not None:
        net.check_data(*eval_data)

    opt_state = init_opt_state(net, optimizer)
    hist = History(rule=rule, meta=dict(meta or {}))
    hist.meta.setdefault("rule", rule)
    hist.meta.setdefault("grad_scale", grad_scale)
    if rule == "pc":
        hist.meta.setdefault("solver", repr(solver))
    rows: list[StepInfo] = []
    evals: list[tuple[int, float, float]] = []
    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        net, opt_state, hist, evals, rows_np = _load_checkpoint(checkpoint, net, opt_state)
        start = len(rows_np["loss"])
        rows = [StepInfo(*(rows_np[k][i] for k in _ROW_KEYS)) for i in range(start)]

    if eval_data is not None and start == 0:
        evals.append((0, *evaluate(net, *eval_data)))

    step_fn = (
        (lambda n, s, x, y: bp_step(n, s, x, y, optimizer, grad_scale=grad_scale))
        if rule == "bp"
        else (lambda n, s, x, y: pc_step(n, s, x, y, optimizer, solver, grad_scale=grad_scale))
    )
    batches = _iter_batches(data, batch_size, key, start)
    bar = Progress(steps, desc=f"train {rule}", enabled=progress)
    bar.update(start)
    step = start
    try:
        while step < steps:
            x, y = next(batches)
            new_net, new_state, info = step_fn(net, opt_state, x, y)
            vals = np.array([float(info.loss), float(info.grad_norm)] + ([float(info.energy)] if rule == "pc" else []))
            if not np.all(np.isfinite(vals)):
                partial = _finish(hist, rows, evals)
                raise DivergenceError(
                    _diverged_message(rule, step, info, optimizer, solver),
                    step=step,
                    history=partial,
                    net=net,
                )
            net, opt_state = new_net, new_state
            rows.append(info)
            step += 1
            bar.update(1, loss=vals[0])
            if eval_data is not None and eval_every and step % eval_every == 0:
                evals.append((step, *evaluate(net, *eval_data)))
            if checkpoint is not None and step % checkpoint_every == 0:
                _save_checkpoint(checkpoint, net, opt_state, _finish(hist, rows, evals), evals)
            if until_loss is not None and vals[0] < until_loss:
                break
    finally:
        bar.close()
    if eval_data is not None and (not evals or evals[-1][0] != step):
        evals.append((step, *evaluate(net, *eval_data)))
    hist = _finish(hist, rows, evals)
    if checkpoint is not None:
        _save_checkpoint(checkpoint, net, opt_state, hist, evals)
    return net, hist


_ROW_KEYS = ("loss", "energy", "grad_norm", "inference_grad_norm", "converged")


def _finish(hist: History, rows: list[StepInfo], evals) -> History:
    if rows:
        stacked = jax.device_get(jax.tree_util.tree_map(lambda *a: jnp.stack(a), *rows))
    else:
        stacked = StepInfo(*(np.zeros(0) for _ in _ROW_KEYS))
    ev = np.asarray(evals, dtype=np.float64).reshape(-1, 3)
    return History(
        rule=hist.rule,
        loss=np.asarray(stacked.loss, np.float64),
        energy=np.asarray(stacked.energy, np.float64),
        grad_norm=np.asarray(stacked.grad_norm, np.float64),
        inference_grad_norm=np.asarray(stacked.inference_grad_norm, np.float64),
        eval_step=ev[:, 0].astype(np.int64),
        test_loss=ev[:, 1],
        test_accuracy=ev[:, 2],
        meta=hist.meta,
    )


def _save_checkpoint(path, net, opt_state, hist: History, evals) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            header = json.dumps({"history": hist.to_dict(), "evals": [list(e) for e in evals]}).encode()
            f.write(len(header).to_bytes(8, "little"))
            f.write(header)
            eqx.tree_serialise_leaves(f, (net, opt_state))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _load_checkpoint(path, net, opt_state):
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size).decode())
        try:
            net, opt_state = eqx.tree_deserialise_leaves(f, (net, opt_state))
        except Exception as e:  # noqa: BLE001 - re-raised with context
            raise ValueError(
                f"checkpoint {path} does not match this network/optimizer ({e}); delete it or "
                f"pass another checkpoint path."
            ) from e
    hist = History.from_dict(header["history"])
    rows = {k: np.asarray(getattr(hist, k) if k != "converged" else np.ones(len(hist.loss), bool)) for k in _ROW_KEYS}
    evals = [tuple(e) for e in header["evals"]]
    return net, opt_state, hist, evals, rows
