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
import functools
import math
import os
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
from ._checks import positive_int
from ._io import atomic_write, jsonable
from ._divergence import divergence_hint, diverging, solver_label
from .errors import DivergenceError
from .inference import AbstractSolver, Euler, default_solver
from .inference._infer import infer_with_state, resolve_solver
from .networks import PCNetwork
from .objectives import mse_loss, output_error, pc_energy

__all__ = ["StepInfo", "bp_step", "pc_step", "init_opt_state", "train", "train_many", "History", "evaluate"]


class StepInfo(eqx.Module):
    """Diagnostics of one training step (all scalars, measured before the update).

    Attributes:
        loss: MSE loss (Eq 1) of the batch at the feedforward pass.
        energy: energy (Eq 2) at the inference equilibrium (PC); NaN for BP.
        grad_norm: L2 norm of the weight gradient of the rule's objective (Eq 1 for BP,
            Eq 2 at the equilibrium for PC), before ``grad_scale``.
        inference_grad_norm: inference residual ``max_i ||dF_i/dz_i||`` (PC); NaN for BP.
        converged: whether inference reached its tolerance (PC); True for BP.
        inference_dt: the inference step size in force after this step, which the next step
            starts from (:class:`pclandscape.PaperEuler`, whose notebook halved it and kept
            it); NaN for every other solver and for BP.
    """

    loss: Array
    energy: Array
    grad_norm: Array
    inference_grad_norm: Array
    converged: Array
    inference_dt: Array


_DEFAULT_OPTIMIZER = optax.sgd(1e-3)  # one object: compiled training loops are cached on it


def _params(net):
    return eqx.filter(net, eqx.is_inexact_array)


def init_opt_state(net: PCNetwork, optimizer: optax.GradientTransformation):
    """``optimizer.init`` on the trainable arrays (weights and biases) of ``net``."""
    return optimizer.init(_params(net))


def _global_norm(tree) -> Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(tree)))


def _apply(net, grads, opt_state, optimizer, grad_scale):
    gnorm = _global_norm(grads)
    grads = jax.tree_util.tree_map(lambda g: (grad_scale * g).astype(g.dtype), grads)
    updates, opt_state = optimizer.update(grads, opt_state, _params(net))
    return eqx.apply_updates(net, updates), opt_state, gnorm


def _bp_step_impl(net, opt_state, x, y, optimizer, grad_scale):
    loss, grads = eqx.filter_value_and_grad(mse_loss)(net, x, y)
    net, opt_state, gnorm = _apply(net, grads, opt_state, optimizer, grad_scale)
    nan = jnp.full((), jnp.nan, loss.dtype)
    return net, opt_state, StepInfo(loss, nan, gnorm, nan, jnp.asarray(True), nan)


def _pc_step_impl(net, opt_state, x, y, optimizer, solver, grad_scale, solver_state=None):
    eq, solver_state = infer_with_state(net, x, y, solver, None, solver_state)
    z = jax.lax.stop_gradient(eq.activities)
    energy, grads = eqx.filter_value_and_grad(lambda n: pc_energy(n, z, x, y))(net)
    loss = mse_loss(net, x, y)
    net, opt_state, gnorm = _apply(net, grads, opt_state, optimizer, grad_scale)
    dt = jnp.full((), jnp.nan, loss.dtype) if solver_state is None else jnp.asarray(solver_state, loss.dtype)
    return net, opt_state, StepInfo(loss, energy, gnorm, eq.grad_norm, eq.converged, dt)


_bp_step = eqx.filter_jit(_bp_step_impl)
_pc_step = eqx.filter_jit(_pc_step_impl)
# Per-call entry points: a plain jax.jit with the optimizer (and solver) static dispatches in
# less than half the time of eqx.filter_jit (measured: 209 vs 439 us per call of a tiny PC
# step on a 2-core CPU), but needs every other argument to be a pytree of arrays; anything
# else falls back to the filtered form (see _dispatch).
_bp_step_plain = jax.jit(_bp_step_impl, static_argnums=(4,))
_pc_step_plain = jax.jit(_pc_step_impl, static_argnums=(4, 5))


def _dispatch(plain, filtered, *args):
    """``plain(*args)``, or ``filtered(*args)`` where plain jit cannot take the arguments (a
    leaf that is not an array, an unhashable optimizer or solver)."""
    try:
        return plain(*args)
    except (TypeError, ValueError):  # raised before tracing for such arguments; a genuine
        return filtered(*args)  # error inside the step is raised again by the filtered call


# The per-step entry points call methods unbound (``type(net).check_data(net, ...)``, see
# ``inference.resolve_solver``): a Python loop of training steps would pay for equinox's
# bound-method wrappers on every step.


def _scalar(value) -> Array:
    """``value`` as a scalar array of the default float type, cached (no transfer per step)."""
    return _scalar_cached(float(value), jnp.dtype(jnp.result_type(float)))


@functools.lru_cache(maxsize=64)
def _scalar_cached(value: float, dtype) -> Array:
    return jnp.asarray(value, dtype)


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
    type(net).check_data(net, x, y)
    return _dispatch(_bp_step_plain, _bp_step, net, opt_state, x, y, optimizer, _scalar(grad_scale))


def pc_step(
    net: PCNetwork,
    opt_state,
    x: Array,
    y: Array,
    optimizer: optax.GradientTransformation,
    solver: AbstractSolver | None = None,
    *,
    grad_scale: float = 1.0,
    solver_state=None,
    check: bool = True,
) -> tuple[PCNetwork, Any, StepInfo]:
    """One PC step: inference to equilibrium, then ``theta <- optimizer(grad_scale * dF/dtheta|_{z*})``.

    ``F`` is the energy of Eq 2 (mean over the batch) and ``z*`` the activities found by
    ``solver`` (default :func:`pcl.default_solver <pclandscape.default_solver>`), held fixed.
    ``solver_state`` is the state a solver carries between steps (default
    ``solver.init_state()``): for :class:`pclandscape.PaperEuler` pass the previous step's
    ``info.inference_dt`` to continue as the paper's notebooks did (``pcl.train`` does this).
    Returns ``(net, opt_state, StepInfo)``. Jit-compiled.

    With ``check`` (default) it raises :class:`~pclandscape.DivergenceError` (``.net`` = the
    network before the step) when the inference diverged: the equilibrium energy is not finite
    or more than double the feedforward loss it started from (an unstable solver; a stable
    descent never raises the energy). The check reads two scalars back from the device; pass
    ``check=False`` to keep a loop of steps asynchronous and inspect ``info`` yourself.
    """
    type(net).check_data(net, x, y)
    solver = resolve_solver(net, y, solver)
    if solver_state is None:
        solver_state = type(solver).init_state(solver)
    out = _dispatch(_pc_step_plain, _pc_step, net, opt_state, x, y, optimizer, solver, _scalar(grad_scale),
                    solver_state)
    if check:
        info = out[2]
        loss, energy = float(info.loss), float(info.energy)
        if not math.isfinite(loss) or diverging(net.output_precision * loss, energy):
            raise DivergenceError(_diverged_message("pc", 0, info, optimizer, solver, net.output_precision).replace(" at step 0", ""), net=net)
    return out


# --------------------------------------------------------------------------- history


FORMAT_VERSION = 1
"""Version of the History / checkpoint file formats written by this package."""


def _check_version(path, version) -> None:
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer pclandscape (format version {version}, this one reads up to "
                         f"{FORMAT_VERSION}); upgrade pclandscape to read it.")


@dataclass
class History:
    """What :func:`train` measured. Arrays are NumPy; ``step`` is 0-based.

    Attributes:
        rule: ``"pc"`` or ``"bp"``.
        loss, energy, grad_norm, inference_grad_norm, inference_dt: per training step (see
            :class:`StepInfo`).
        eval_step: the steps (number of updates done) at which the test set was evaluated.
        test_loss, test_accuracy: MSE loss and argmax accuracy (NaN for non-one-hot targets)
            at those steps.
        meta: free-form settings (optimizer, solver, seed, ...), JSON-serialisable.
        extra: per-step values of the ``metrics`` passed to :func:`train`, by name.
    """

    rule: str
    loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    energy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    grad_norm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    inference_grad_norm: np.ndarray = field(default_factory=lambda: np.zeros(0))
    inference_dt: np.ndarray = field(default_factory=lambda: np.zeros(0))
    eval_step: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    test_loss: np.ndarray = field(default_factory=lambda: np.zeros(0))
    test_accuracy: np.ndarray = field(default_factory=lambda: np.zeros(0))
    meta: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    _ARRAYS = (
        "loss",
        "energy",
        "grad_norm",
        "inference_grad_norm",
        "inference_dt",
        "eval_step",
        "test_loss",
        "test_accuracy",
    )

    def __len__(self) -> int:
        return len(self.loss)

    def to_dict(self) -> dict:
        """A JSON-serialisable dict (NaN written as null)."""
        out = {"format": "pclandscape.History", "version": FORMAT_VERSION, "rule": self.rule, "meta": jsonable(self.meta)}
        for name in self._ARRAYS:
            out[name] = jsonable(np.asarray(getattr(self, name)))
        out["extra"] = {k: jsonable(np.asarray(v)) for k, v in self.extra.items()}
        return out

    @classmethod
    def from_dict(cls, d: dict, source: str = "the dict") -> "History":
        """The inverse of :meth:`to_dict`; ``ValueError`` naming ``source`` for anything else."""
        if not isinstance(d, dict) or d.get("rule") not in ("pc", "bp"):
            raise ValueError(f"{source} is not a pclandscape History (expected a JSON object with 'rule': 'pc' or "
                             f"'bp' and per-step lists, as History.save writes).")
        _check_version(source, d.get("version", 1))
        kw = {}
        try:
            for name in cls._ARRAYS:
                vals = [np.nan if v is None else v for v in d.get(name, [])]
                dtype = np.int64 if name == "eval_step" else np.float64
                kw[name] = np.asarray(vals, dtype=dtype)
                if kw[name].ndim != 1:
                    raise ValueError
            extra = {k: np.asarray([np.nan if v is None else v for v in vals], np.float64)
                     for k, vals in d.get("extra", {}).items()}
        except (TypeError, ValueError, OverflowError, AttributeError):
            raise ValueError(f"{source}: the History entry '{name}' is not a list of numbers; the file was not written "
                             f"by History.save or was edited.") from None
        return cls(rule=d["rule"], meta=d.get("meta", {}), extra=extra, **kw)

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``.json`` or ``.npz`` (by suffix), atomically. Returns the path."""
        path = Path(path)
        if path.suffix not in (".json", ".npz"):
            raise ValueError(f"path={str(path)!r} must end in .json or .npz.")
        def write(f):
            if path.suffix == ".json":
                f.write(json.dumps(self.to_dict()).encode())
            else:
                arrays = {name: np.asarray(getattr(self, name)) for name in self._ARRAYS}
                arrays.update({f"extra.{k}": np.asarray(v) for k, v in self.extra.items()})
                np.savez(f, rule=np.asarray(self.rule), meta=np.asarray(json.dumps(self.meta)),
                         version=np.asarray(FORMAT_VERSION), **arrays)

        atomic_write(path, write)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "History":
        """Read a history written by :meth:`save` (``.json`` or ``.npz``).

        Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file and
        saying whether it is empty or truncated, of another format, or of a newer version.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no history at {path}")
        if path.suffix not in (".json", ".npz"):
            raise ValueError(f"{path}: History.load reads the .json or .npz files written by History.save, not "
                             f"'{path.suffix or 'no suffix'}' files.")
        if path.stat().st_size == 0:
            raise ValueError(f"{path} is empty (an interrupted write?); rerun the training that wrote it.")
        if path.suffix == ".json":
            try:
                d = json.loads(path.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                raise ValueError(f"{path} is not a JSON text file (binary content); History.save writes .json as "
                                 f"text.") from None
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is truncated or not JSON ({e.msg} at line {e.lineno}); rerun the training "
                                 f"that wrote it.") from None
            return cls.from_dict(d, source=str(path))
        import zipfile

        try:
            with np.load(path, allow_pickle=False) as f:
                missing = [k for k in ("rule", "meta", *cls._ARRAYS) if k not in f.files]
                if missing:
                    raise ValueError(f"{path} is an .npz archive but not a pclandscape History (missing "
                                     f"{', '.join(missing)}).")
                kw = {name: f[name] for name in cls._ARRAYS}
                extra = {k[len("extra."):]: f[k] for k in f.files if k.startswith("extra.")}
                version = int(f["version"]) if "version" in f.files else 1
                rule, meta = str(f["rule"]), json.loads(str(f["meta"]))
        except (zipfile.BadZipFile, EOFError, OSError) as e:
            raise ValueError(f"{path} is truncated or not an .npz archive ({type(e).__name__}); rerun the training "
                             f"that wrote it.") from None
        except json.JSONDecodeError:
            raise ValueError(f"{path}: its 'meta' entry is not JSON; the file was not written by History.save.") from None
        _check_version(path, version)
        return cls(rule=rule, meta=meta, extra=extra, **kw)


# --------------------------------------------------------------------------- data


def _array_batches(x, y, batch_size: int, key, start_step: int):
    for idx in _index_stream(x.shape[0], batch_size, key, start_step):
        yield jnp.asarray(x[idx]), jnp.asarray(y[idx])  # host-side gather, one transfer


def _iter_batches(data, batch_size, key, start_step):
    if _is_array_pair(data):
        x, y = np.asarray(data[0]), np.asarray(data[1])
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


def _is_array_pair(data) -> bool:
    return isinstance(data, (tuple, list)) and len(data) == 2 and hasattr(data[0], "shape") and hasattr(data[1], "shape")


@functools.partial(jax.jit, static_argnums=(2, 3))
def _permutations(key, first_epoch, count: int, n: int):
    return jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(key, e), n))(first_epoch + jnp.arange(count))


def _index_stream(n: int, batch_size: int, key, start_step: int, total_steps: int | None = None):
    """Batch index arrays (resumable by step): epoch ``e`` visits the samples in the order
    ``jax.random.permutation(fold_in(key, e), n)`` (``arange(n)`` without a key), in
    ``n // batch_size`` fixed-size batches (the remainder of each epoch is dropped).

    Permutations are drawn for many epochs per call (one call per epoch would cost a
    dispatch per step in full-batch training), but no more than the ``total_steps`` of the run
    need (drawing 256 permutations of 4000 samples took 0.6 s on a 2-core CPU).
    """
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the data set ({n} samples); lower it.")
    n_batches = n // batch_size
    chunk = max(1, min(256, (1 << 20) // n))
    if total_steps is not None:
        chunk = max(1, min(chunk, -(-(total_steps - start_step) // n_batches) + 1))
    cache_start, cache = None, None
    step = start_step
    while True:
        epoch, offset = divmod(step, n_batches)
        if key is None:
            perm = np.arange(n)
        else:
            if cache is None or not cache_start <= epoch < cache_start + chunk:
                cache_start, cache = epoch, np.asarray(_permutations(key, epoch, chunk, n))
            perm = cache[epoch - cache_start]
        while offset < n_batches:
            yield perm[offset * batch_size : (offset + 1) * batch_size]
            offset += 1
            step += 1


def _device_data(net, data) -> tuple[Array, Array]:
    """An ``(x, y)`` pair of arrays on the device, checked against ``net`` (fused training)."""
    x_all, y_all = jnp.asarray(data[0]), jnp.asarray(data[1])
    if x_all.shape[0] != y_all.shape[0]:
        raise ValueError(f"data has {x_all.shape[0]} inputs but {y_all.shape[0]} targets.")
    net.check_data(x_all[:1], y_all[:1])
    return x_all, y_all


def _tree_select(keep, old, new):
    """``old`` where ``keep`` else ``new``, over the array leaves of two same-structure pytrees."""
    return jax.tree_util.tree_map(
        lambda a, b: jnp.where(keep, a, b) if eqx.is_array(a) else a, old, new, is_leaf=lambda v: v is None
    )


def _step_ok(rule, info: StepInfo, new_net):
    """Whether a training step may be applied: finite loss and gradient, finite weights after
    the update, and (PC) an inference that did not diverge -- its equilibrium energy finite and
    not more than double the energy it started from, the feedforward loss (see
    ``inference._diverging``). Traceable; a scalar boolean."""
    ok = jnp.isfinite(info.loss) & jnp.isfinite(info.grad_norm)
    ok &= jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree_util.tree_leaves(_params(new_net))]))
    if rule == "pc":  # the feedforward energy is the loss times the output precision
        ok &= ~diverging(new_net.output_precision * info.loss, info.energy)
    return ok


def _scan_steps(net, opt_state, x_all, y_all, idx, n_valid, scale, target, rule, optimizer, solver, metric_fns,
                batch_sharding=None, done=None, solver_state=None):
    """``len(idx)`` training steps fused in one ``lax.scan``; steps past ``n_valid``, after the
    loss target is met, or that would produce non-finite values leave the state unchanged.

    ``batch_sharding`` (a ``jax.sharding.Sharding`` or None) shards each gathered batch along
    its sample axis across devices: data parallelism, with the weight-gradient sums reduced
    across devices by XLA. ``done`` (a boolean, default False) marks a run already finished.
    ``solver_state`` is the inference solver's carried state (see ``AbstractSolver.init_state``)."""

    def body(carry, inputs):
        net, state, done, sstate = carry
        i, ids = inputs
        x, y = x_all[ids], y_all[ids]
        if batch_sharding is not None:
            x = jax.lax.with_sharding_constraint(x, batch_sharding)
            y = jax.lax.with_sharding_constraint(y, batch_sharding)
        if rule == "bp":
            new_net, new_state, info = _bp_step(net, state, x, y, optimizer, scale)
            new_sstate = sstate
        else:
            new_net, new_state, info = _pc_step(net, state, x, y, optimizer, solver, scale, sstate)
            new_sstate = None if sstate is None else info.inference_dt.astype(jnp.result_type(sstate))
        finite = _step_ok(rule, info, new_net)
        extra = tuple(fn(net, x, y) for fn in metric_fns)
        active = (~done) & (i < n_valid)
        apply = active & finite
        net = _tree_select(~apply, net, new_net)
        state = _tree_select(~apply, state, new_state)
        sstate = _tree_select(~apply, sstate, new_sstate)
        done = done | (active & ~finite) | (apply & (info.loss < target))
        return (net, state, done, sstate), (info, extra, apply, active & ~finite)

    steps = jnp.arange(idx.shape[0])
    done = jnp.asarray(False) if done is None else done
    (net, state, done, sstate), (info, extra, ran, bad) = jax.lax.scan(
        body, (net, opt_state, done, solver_state), (steps, idx))
    return net, state, info, extra, ran, bad, done, sstate


_run_steps = eqx.filter_jit(_scan_steps)
_jit_step_ok = eqx.filter_jit(_step_ok)


@eqx.filter_jit
def _run_steps_many(nets, opt_states, x_all, y_all, idx, n_valid, scale, target, rule, optimizer, solver, metric_fns, done,
                    vectorize, solver_states=None):
    """:func:`_scan_steps` over a leading seed axis of ``nets``, ``opt_states``, ``idx``,
    ``done``, ``scale`` and ``solver_states``: vmapped (``vectorize``) or one seed after the
    other (``lax.map``), in one program."""

    def one(net, state, ids, d, sc, ss):
        return _scan_steps(net, state, x_all, y_all, ids, n_valid, sc, target, rule, optimizer, solver, metric_fns, None, d,
                           ss)

    if vectorize:
        return eqx.filter_vmap(one)(nets, opt_states, idx, done, scale, solver_states)
    return jax.lax.map(lambda a: one(*a), (nets, opt_states, idx, done, scale, solver_states))


def _batch_sharding(batch_size: int, data_parallel: bool | None, fused: bool):
    """The sharding of a batch across the local devices, or None (see ``train(data_parallel=)``)."""
    devices = jax.local_devices()
    if data_parallel is False or (data_parallel is None and (len(devices) < 2 or not fused)):
        return None
    if data_parallel and not fused:
        raise ValueError("data_parallel=True needs data as a pair of arrays (x, y) and steps_per_call > 1.")
    if batch_size % len(devices):
        if data_parallel:
            raise ValueError(
                f"data_parallel=True shards each batch over the {len(devices)} local devices: batch_size="
                f"{batch_size} must be a multiple of {len(devices)}."
            )
        return None
    if len(devices) < 2:
        return None
    mesh = jax.sharding.Mesh(np.asarray(devices), ("data",))
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


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


def _diverged_message(rule, step, info: StepInfo, optimizer_name, solver, precision: float = 1.0) -> str:
    what = ", ".join(
        f"{k}={float(v):.3g}" for k, v in (("loss", info.loss), ("energy", info.energy), ("grad_norm", info.grad_norm))
        if not (k == "energy" and rule == "bp")
    )
    cause = "the learning rate is probably too large: lower it"
    loss, energy = float(info.loss), float(info.energy)
    if rule == "pc" and math.isfinite(loss) and bool(diverging(precision * loss, energy)):
        return (
            f"Training (PC) stopped at step {step}: inference diverged, the energy went from {loss:.4g} (feedforward) "
            f"to {energy:.4g} in {solver_label(solver)} inference: {divergence_hint(solver)}. "
            f"The error carries .history and .net up to the last good step."
        )
    if rule == "pc" and isinstance(solver, Euler):
        cause += (
            f", or the inference step size dt={solver.dt} is too large for the current weights "
            f"(Euler is unstable when dt * lambda_max(d^2F/dz^2) > 2): lower dt or use pcl.Newton()"
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
    metrics: dict | None = None,
    steps_per_call: int = 32,
    data_parallel: bool | None = None,
) -> tuple[PCNetwork, History]:
    """Train ``net`` with backprop (``rule="bp"``) or predictive coding (``rule="pc"``).

    Args:
        net: the network to train.
        data: ``(x, y)`` arrays (cut into shuffled batches of ``batch_size``, a new seeded
            permutation every epoch, incomplete last batch dropped) or any re-iterable of
            ``(x, y)`` batches.
        rule: ``"pc"`` or ``"bp"``.
        optimizer: an optax optimizer (default ``optax.sgd(1e-3)``, the paper's). The compiled
            training loop is cached on the optimizer object: pass the same object to later
            calls (not a fresh ``optax.sgd(lr)`` each time) to skip recompilation.
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
        metrics: ``{name: fn(net, x, y) -> scalar}`` evaluated on every batch before the
            update and stored in ``History.extra[name]`` (e.g. the closed-form F* of Fig 1).
            With array data they run inside the fused steps, so they must be JAX-traceable.
        steps_per_call: with array data, this many steps run fused in one compiled
            ``lax.scan`` (batches gathered on the device, one host round trip per call);
            ``until_loss``, divergence, evaluation and checkpoints still act at the exact step.
            1 runs one jitted step per call.
        data_parallel: shard every batch along its samples across the local devices (weights
            replicated, gradient sums all-reduced by XLA). ``None`` (default): when more than
            one device is present and ``batch_size`` divides evenly; ``True`` insists (a
            ``ValueError`` if it cannot). Needs array data and ``steps_per_call > 1``. The
            number of devices used is stored in ``History.meta["devices"]``.

    Returns:
        ``(trained net, History)``.

    Raises:
        ValueError: unknown rule, bad data or batch size.
        DivergenceError: the loss, energy or gradient became NaN/inf; it names the step
            and carries the history and network up to the last finite step.
    """
    _check_run_args("train", rule, steps, batch_size, steps_per_call)
    for name, value in (("eval_every", eval_every), ("checkpoint_every", checkpoint_every)):
        if value is not None:
            positive_int("train", name, value)
    optimizer = _DEFAULT_OPTIMIZER if optimizer is None else optimizer
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
    extras: dict[str, list] = {}
    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        net, opt_state, hist, evals, rows_np = _load_checkpoint(checkpoint, net, opt_state)
        start = len(rows_np["loss"])
        extras = {k: list(v) for k, v in hist.extra.items()}
        rows = [StepInfo(*(rows_np[k][i] for k in _ROW_KEYS)) for i in range(start)]

    if eval_data is not None and start == 0:
        evals.append((0, *evaluate(net, *eval_data)))

    bar = Progress(steps, desc=f"train {rule}", enabled=progress)
    bar.update(start)
    step = start
    names = tuple((metrics or {}).keys())
    fused = _is_array_pair(data) and steps_per_call > 1
    sharding = _batch_sharding(batch_size, data_parallel, fused)
    hist.meta["devices"] = 1 if sharding is None else len(sharding.mesh.devices.flat)
    sstate = _initial_solver_state(solver, rows) if rule == "pc" else None
    try:
        if fused:
            x_all, y_all = _device_data(net, data)
            if rule == "pc":
                solver = resolve_solver(net, y_all, solver)
            order = _index_stream(x_all.shape[0], batch_size, key, start, steps)
            metric_fns = tuple((metrics or {}).values())
            scale, target = _scalar(grad_scale), _scalar(-np.inf if until_loss is None else until_loss)
            while step < steps:
                bounds = [steps - step, steps_per_call]
                if eval_data is not None and eval_every:
                    bounds.append(eval_every - step % eval_every)
                if checkpoint is not None:
                    bounds.append(checkpoint_every - step % checkpoint_every)
                n_valid = min(bounds)
                idx = [next(order) for _ in range(n_valid)]
                idx = np.stack(idx + [idx[0]] * (steps_per_call - n_valid))
                net, opt_state, info, extra, ran, bad, stop, sstate = _run_steps(
                    net, opt_state, x_all, y_all, jnp.asarray(idx), jnp.asarray(n_valid), scale, target,
                    rule, optimizer, solver, metric_fns, sharding, None, sstate,
                )
                info, extra, ran, bad = jax.device_get((info, extra, ran, bad))
                m = int(ran.sum())
                for i in range(m):
                    rows.append(_host_row(info, i))
                    for name, vals in zip(names, extra):
                        extras.setdefault(name, []).append(vals[i])
                if bad.any():
                    k = int(np.argmax(bad))
                    bad_info = _host_row(info, k)
                    raise DivergenceError(
                        _diverged_message(rule, step + m, bad_info, optimizer, solver, net.output_precision),
                        step=step + m,
                        history=_finish(hist, rows, evals, extras),
                        net=net,
                    )
                step += m
                bar.update(m, loss=float(info.loss[m - 1]) if m else float("nan"))
                if eval_data is not None and eval_every and step % eval_every == 0:
                    evals.append((step, *evaluate(net, *eval_data)))
                if checkpoint is not None and step % checkpoint_every == 0:
                    _save_checkpoint(checkpoint, net, opt_state, _finish(hist, rows, evals, extras), evals)
                if bool(stop):
                    break
        else:
            step_fn = (
                (lambda n, s, x, y: bp_step(n, s, x, y, optimizer, grad_scale=grad_scale))
                if rule == "bp"
                else (lambda n, s, x, y: pc_step(n, s, x, y, optimizer, solver, grad_scale=grad_scale, solver_state=sstate,
                                                check=False))
            )
            batches = _iter_batches(data, batch_size, key, start)
            while step < steps:
                x, y = next(batches)
                new_net, new_state, info = step_fn(net, opt_state, x, y)
                vals = np.array([float(info.loss), float(info.grad_norm)] + ([float(info.energy)] if rule == "pc" else []))
                if not bool(_jit_step_ok(rule, info, new_net)):
                    partial = _finish(hist, rows, evals, extras)
                    raise DivergenceError(
                        _diverged_message(rule, step, info, optimizer, solver, net.output_precision),
                        step=step,
                        history=partial,
                        net=net,
                    )
                for name, fn in (metrics or {}).items():
                    extras.setdefault(name, []).append(fn(net, x, y))
                net, opt_state = new_net, new_state
                if sstate is not None:
                    sstate = info.inference_dt
                rows.append(info)
                step += 1
                bar.update(1, loss=vals[0])
                if eval_data is not None and eval_every and step % eval_every == 0:
                    evals.append((step, *evaluate(net, *eval_data)))
                if checkpoint is not None and step % checkpoint_every == 0:
                    _save_checkpoint(checkpoint, net, opt_state, _finish(hist, rows, evals, extras), evals)
                if until_loss is not None and vals[0] < until_loss:
                    break
    finally:
        bar.close()
    if eval_data is not None and (not evals or evals[-1][0] != step):
        evals.append((step, *evaluate(net, *eval_data)))
    hist = _finish(hist, rows, evals, extras)
    if checkpoint is not None:
        _save_checkpoint(checkpoint, net, opt_state, hist, evals)
    return net, hist


def _check_run_args(owner: str, rule, steps, batch_size, steps_per_call) -> None:
    if rule not in ("pc", "bp"):
        raise ValueError(f"rule={rule!r} is not known; use 'pc' (predictive coding) or 'bp' (backprop).")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps={steps!r} must be a non-negative integer (the maximum number of updates).")
    positive_int(owner, "batch_size", batch_size)
    positive_int(owner, "steps_per_call", steps_per_call)


def _initial_solver_state(solver, rows):
    """The solver state a run starts (or resumes) from: the last step's ``inference_dt`` when
    the solver carries one and a finite value was recorded, else ``solver.init_state()``."""
    state = type(solver).init_state(solver)
    if state is not None and rows:
        last = float(np.asarray(rows[-1].inference_dt))
        if math.isfinite(last):
            state = jnp.asarray(last, jnp.asarray(state).dtype)
    return state


def train_many(
    nets: PCNetwork,
    data: tuple[Array, Array],
    *,
    rule: str = "pc",
    optimizer: optax.GradientTransformation | None = None,
    solver: AbstractSolver | None = None,
    steps: int,
    until_loss: float | None = None,
    batch_size: int = 64,
    keys: PRNGKeyArray | None = None,
    grad_scale: float | Array = 1.0,
    progress: bool | None = None,
    metrics: dict | None = None,
    steps_per_call: int = 32,
    vectorize: bool | None = None,
    on_divergence: str = "raise",
) -> tuple[PCNetwork, list[History]]:
    """Train several networks (seeds) as one compiled computation.

    ``nets`` is a network whose array leaves carry a leading seed axis ``S``, e.g.
    ``eqx.filter_vmap(lambda k: pcl.MLP(k, widths, "tanh"))(jax.random.split(key, S))``;
    ``keys`` (shape ``(S,)``, or None) are the per-seed shuffling keys. Seed ``s`` follows the
    trajectory of ``train(net_s, data, key=keys[s], ...)`` with the same arguments (same
    batches, same early stop at ``until_loss``), but every step of all seeds runs in one
    compiled call, which keeps an accelerator busy where one small network would not.

    Args: as :func:`train` (array data only; no evaluation, checkpoints or data parallelism),
    and ``vectorize``: run the seeds as one vmapped computation (batched products) or one
    after the other inside the compiled call (``lax.map``). ``None`` (the default) vmaps on
    accelerators and maps on CPUs, where batched products were slower than a loop: 5 seeds of
    the paper's MNIST MLP took 7.5-7.7x one seed vmapped and 4.6-5.6x mapped on a 2-core CPU
    (``benchmarks/seeds.py``).

    ``grad_scale`` may be one value per seed (shape ``(S,)``): with ``optax.sgd(1.0)`` it is
    each member's learning rate, so a grid of learning rates x seeds trains as one program
    compiled once (a learning rate inside ``optax.sgd(lr)`` is a compile-time constant).
    ``on_divergence="stop"`` freezes a member whose loss, energy or gradient became NaN/inf
    at its last finite state and goes on with the others (its History then records the step
    in ``meta["diverged_at"]``); ``"raise"`` (default) raises :class:`DivergenceError`.

    Returns:
        ``(trained nets, stacked like nets; [History per seed])``.

    Raises:
        ValueError: bad arguments (names the argument).
        DivergenceError: a seed's loss, energy or gradient became NaN/inf (names the seed and step).
    """
    _check_run_args("train_many", rule, steps, batch_size, steps_per_call)
    if on_divergence not in ("raise", "stop"):
        raise ValueError(f"on_divergence={on_divergence!r} is not known; use 'raise' or 'stop'.")
    if not _is_array_pair(data):
        raise ValueError("train_many needs data as a pair of arrays (x, y).")
    leaves = [a for a in jax.tree_util.tree_leaves(nets) if eqx.is_array(a)]
    n_seeds = int(leaves[0].shape[0])
    if any(a.shape[:1] != (n_seeds,) for a in leaves):
        raise ValueError("nets must carry a leading seed axis on every array (build them with eqx.filter_vmap).")
    first = jax.tree_util.tree_map(lambda a: a[0] if eqx.is_array(a) else a, nets)
    x_all, y_all = _device_data(first, data)
    if keys is not None and len(keys) != n_seeds:
        raise ValueError(f"keys has {len(keys)} entries but nets has {n_seeds} seeds.")
    optimizer = _DEFAULT_OPTIMIZER if optimizer is None else optimizer
    if rule == "pc":
        solver = resolve_solver(first, y_all, solver)
    vectorize = jax.default_backend() != "cpu" if vectorize is None else bool(vectorize)
    opt_states = eqx.filter_vmap(lambda n: init_opt_state(n, optimizer))(nets)
    orders = [_index_stream(x_all.shape[0], batch_size, None if keys is None else keys[s], 0, steps) for s in range(n_seeds)]
    names = tuple((metrics or {}).keys())
    metric_fns = tuple((metrics or {}).values())
    scales = np.asarray(grad_scale, np.float64)
    if scales.ndim > 1 or (scales.ndim == 1 and scales.shape != (n_seeds,)):
        raise ValueError(f"grad_scale must be a number or one per seed (shape ({n_seeds},)), got shape {scales.shape}.")
    if not np.all(np.isfinite(scales)):
        raise ValueError(f"grad_scale={grad_scale!r} must be finite.")
    scale = jnp.asarray(np.broadcast_to(scales, (n_seeds,)), jnp.result_type(float))
    target = _scalar(-np.inf if until_loss is None else until_loss)
    rows = [[] for _ in range(n_seeds)]
    diverged_at = [None] * n_seeds
    extras = [{} for _ in range(n_seeds)]
    done = np.zeros(n_seeds, bool)
    state0 = type(solver).init_state(solver) if rule == "pc" else None
    sstates = None if state0 is None else jnp.broadcast_to(state0, (n_seeds,) + jnp.shape(state0))
    bar = Progress(steps, desc=f"train {rule} x{n_seeds}", enabled=progress)
    step = 0
    try:
        while step < steps and not done.all():
            n_valid = min(steps - step, steps_per_call)
            idx = np.stack([np.stack([next(o) for _ in range(n_valid)] + [np.zeros(batch_size, np.int64)] * (steps_per_call - n_valid))
                            for o in orders])
            new_nets, opt_states, info, extra, ran, bad, stop, sstates = _run_steps_many(
                nets, opt_states, x_all, y_all, jnp.asarray(idx), jnp.asarray(n_valid), scale, target,
                rule, optimizer, solver, metric_fns, jnp.asarray(done), vectorize, sstates,
            )
            info, extra, ran, bad, stop = jax.device_get((info, extra, ran, bad, stop))
            for s in range(n_seeds):
                for i in np.nonzero(ran[s])[0]:
                    rows[s].append(_host_row(info, (s, i)))
                    for name, vals in zip(names, extra):
                        extras[s].setdefault(name, []).append(vals[s, i])
            if bad.any() and on_divergence == "stop":
                for s in np.nonzero(bad.any(1))[0]:
                    diverged_at[s] = len(rows[s])
            elif bad.any():
                s, i = (int(v[0]) for v in np.nonzero(bad))
                bad_info = _host_row(info, (s, i))
                raise DivergenceError(
                    f"seed {s}: " + _diverged_message(rule, len(rows[s]), bad_info, optimizer, solver, first.output_precision),
                    step=len(rows[s]),
                    history=_finish(History(rule=rule), rows[s], [], extras[s]),
                    net=jax.tree_util.tree_map(lambda a: a[s] if eqx.is_array(a) else a, new_nets),  # bad steps not applied
                )
            nets = new_nets
            done = np.asarray(stop, bool)
            step += n_valid
            bar.update(n_valid, loss=float(np.mean([r[-1].loss for r in rows if r])) if any(rows) else float("nan"))
    finally:
        bar.close()
    meta = {"rule": rule, "seeds": n_seeds}
    if rule == "pc":
        meta["solver"] = repr(solver)
    hists = []
    for s in range(n_seeds):
        m = dict(meta, seed_index=s, grad_scale=float(np.broadcast_to(scales, (n_seeds,))[s]))
        if diverged_at[s] is not None:
            m["diverged_at"] = diverged_at[s]
        hists.append(_finish(History(rule=rule, meta=m), rows[s], [], extras[s]))
    return nets, hists


_ROW_KEYS = ("loss", "energy", "grad_norm", "inference_grad_norm", "converged", "inference_dt")


def _host_row(info: StepInfo, index) -> StepInfo:
    """One step's diagnostics out of host arrays stacked over steps (and seeds)."""
    return StepInfo(*(np.asarray(getattr(info, k)[index]) for k in _ROW_KEYS))


def _finish(hist: History, rows: list[StepInfo], evals, extras=None) -> History:
    if rows:
        host = jax.device_get(rows)  # stack on the host: a device stack of many scalars compiles for minutes
        stacked = StepInfo(*(np.asarray([np.asarray(getattr(r, k)) for r in host]) for k in _ROW_KEYS))
    else:
        stacked = StepInfo(*(np.zeros(0) for _ in _ROW_KEYS))
    ev = np.asarray(evals, dtype=np.float64).reshape(-1, 3)
    return History(
        rule=hist.rule,
        loss=np.asarray(stacked.loss, np.float64),
        energy=np.asarray(stacked.energy, np.float64),
        grad_norm=np.asarray(stacked.grad_norm, np.float64),
        inference_grad_norm=np.asarray(stacked.inference_grad_norm, np.float64),
        inference_dt=np.asarray(stacked.inference_dt, np.float64),
        eval_step=ev[:, 0].astype(np.int64),
        test_loss=ev[:, 1],
        test_accuracy=ev[:, 2],
        meta=hist.meta,
        extra={k: np.asarray(jax.device_get(v), np.float64) for k, v in (extras or {}).items()},
    )


def _save_checkpoint(path, net, opt_state, hist: History, evals) -> None:
    def write(f):
        header = json.dumps({"version": FORMAT_VERSION, "history": hist.to_dict(),
                             "evals": [list(e) for e in evals]}).encode()
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        eqx.tree_serialise_leaves(f, (net, opt_state))

    atomic_write(path, write)


def _load_checkpoint(path, net, opt_state):
    path = Path(path)
    total = path.stat().st_size
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if total < 8 or size == 0 or size > total - 8:
            raise ValueError(f"checkpoint {path} is {'empty' if total == 0 else 'truncated or not a pclandscape checkpoint'} "
                             f"(its header does not fit in its {total} bytes); delete it to start afresh.")
        try:
            header = json.loads(f.read(size).decode("utf-8"))
            if not isinstance(header, dict) or "history" not in header or "evals" not in header:
                raise ValueError
        except (UnicodeDecodeError, ValueError):
            raise ValueError(f"checkpoint {path} is not a pclandscape checkpoint (its header is not the expected "
                             f"JSON); delete it or pass another checkpoint path.") from None
        _check_version(path, header.get("version", 1))
        try:
            net, opt_state = eqx.tree_deserialise_leaves(f, (net, opt_state))
        except Exception as e:  # noqa: BLE001 - re-raised with context
            raise ValueError(
                f"checkpoint {path} is truncated or does not match this network/optimizer ({type(e).__name__}: {e}); "
                f"delete it or pass another checkpoint path."
            ) from None
    hist = History.from_dict(header["history"], source=f"checkpoint {path}")
    n = len(hist.loss)
    rows = {k: np.asarray(getattr(hist, k) if k != "converged" else np.ones(n, bool)) for k in _ROW_KEYS}
    if len(rows["inference_dt"]) != n:  # a checkpoint written before inference_dt was recorded
        rows["inference_dt"] = np.full(n, np.nan)
    evals = [tuple(e) for e in header["evals"]]
    return net, opt_state, hist, evals, rows
