"""Shared machinery of the figure experiments: claims, results, protocols, small helpers.

An experiment module defines ``NAME``, ``DESCRIPTION``, a frozen ``Config`` dataclass whose
defaults are the paper's settings (§A.4), ``quick_config()`` (sized for a 2-core laptop CPU,
still checking every claim), ``run(config, progress=None) -> Results`` and
``plot(results) -> dict[str, Figure]``. Experiments hold no maths of their own: they call the
library.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import glob
import json
import math
from pathlib import Path
from dataclasses import dataclass, field
import types
import typing
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pclandscape as pcl
from pclandscape._io import atomic_write

__all__ = [
    "Claim",
    "Results",
    "PROTOCOLS",
    "protocol_scales",
    "protocol_setup",
    "escape_step",
    "grid_batch_keys",
    "grid_member",
    "final_residuals",
    "float64_finding",
    "checkpoint_path",
    "resumable",
    "resumable_record",
    "claim",
    "load_data",
    "data_label",
    "fmt",
    "sgd",
    "validate_config",
    "parse_scalar",
    "seeds_from_text",
]

PROTOCOLS = ("paper", "fair")

PROTOCOL_NOTE = (
    "Two protocols. 'paper' is the paper's own training code (its notebooks, checked weight by weight "
    "against a transcription in tests/test_paper_protocol.py and against the notebooks' PyTorch classes "
    "run side by side in reference/notebook_check.py): nonlinear layers predict f(W z) (Linear then "
    "Tanh/ReLU; the output layer W z); BP minimises nn.MSELoss() (the mean over all N d_y entries of the "
    "batch, i.e. 2/d_y times Eq 1) while PC's weight update is the batch *sum* of the per-sample energy "
    "gradients (N times the gradient of Eq 2), at the same learning rate, so PC's step is N d_y / 2 "
    "(= 320 for N = 64, d_y = 10) times BP's; PC inference is pcl.PaperEuler: activities from the "
    "forward pass, one dt (0.1) for the batch, halved when the batch's total energy did not decrease "
    "(the step taken is kept), reset and stopped when it reaches 0.025, the halved dt carried into the "
    "next training step, and the weight gradient taken at the start of the last iteration. 'fair' uses "
    "Eq 1 and Eq 2 as written (the same 1/(2N) for both rules) with PC at a verified equilibrium and "
    "each rule at its own best learning rate: the 'fair' experiment."
)


@dataclass
class Claim:
    """One checked statement: what the paper says, what was expected, what was measured.

    ``category`` is ``"paper"`` (a claim of the paper), ``"finding"`` (a result beyond the
    paper, reported with its own verdict) or ``"skipped"`` (not measurable here, e.g. missing
    data; ``passed`` is None). The report places it in its experiment's part
    (``runner.EXPERIMENT_SECTIONS``). ``verdict`` replaces PASS / FAIL where a claim is decided in words (the fair comparison's
    SUPPORTED / NOT SUPPORTED / INCONCLUSIVE).
    """

    id: str
    statement: str
    expected: str
    measured: str
    passed: bool | None
    category: str = "paper"
    verdict: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def claim(id, statement, expected, measured, passed, category="paper", verdict=None) -> Claim:
    """A :class:`Claim` (``passed`` coerced to bool, None kept)."""
    return Claim(id, statement, expected, measured, None if passed is None else bool(passed), category, verdict)


@dataclass
class Results:
    """What an experiment returns: claims, raw series (JSON), arrays (NPZ), data notes, and
    ``tables`` (``{"title", "columns", "rows"}`` dicts of strings) the report shows as they are."""

    name: str
    config: Any
    claims: list[Claim] = field(default_factory=list)
    series: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)
    data: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: list[dict] = field(default_factory=list)

    def add(self, c: Claim) -> None:
        self.claims.append(c)

    def use_data(self, ds) -> None:
        line = f"{ds.name} ({ds.source})" + (f" -- {ds.note}" if ds.note else "")
        if line not in self.data:
            self.data.append(line)


def protocol_scales(protocol: str, batch_size: int, d_y: int) -> tuple[float, float]:
    """Gradient scales ``(bp, pc)`` applied to the gradients of Eq 1 and Eq 2 (see PROTOCOL_NOTE).

    ``"paper"``: BP minimised ``nn.MSELoss()``, the mean over all ``N d_y`` entries of the batch
    (masked ones included, as zeros, in matrix completion), i.e. ``2 / d_y`` times Eq 1; PC's
    ``set_grads`` took the gradient of the batch *sum* of energies, ``N`` times Eq 2.
    ``"fair"``: Eqs 1 and 2 as written, ``(1, 1)``.
    """
    if protocol == "paper":
        return 2.0 / d_y, float(batch_size)
    if protocol == "fair":
        return 1.0, 1.0
    raise ValueError(f"protocol={protocol!r} must be one of {PROTOCOLS}.")


def protocol_setup(protocol: str, net, batch_size: int, dt: float = 0.1, T: int = 50):
    """``(pc_net, solver, bp_scale, pc_scale)`` for one BP-vs-PC protocol (see PROTOCOL_NOTE).

    ``"paper"``: the same weights in a network predicting ``f(W z)``, :class:`pclandscape.PaperEuler`
    and the notebooks' gradient scales. ``"fair"``: the network as it is, the default
    (verified-equilibrium) solver and unit scales. BP's network is ``net`` under both (the
    feedforward function of the two prediction forms is the same).
    """
    bp_s, pc_s = protocol_scales(protocol, batch_size, net.output_dim)
    if protocol == "paper":
        if not net.is_linear:
            net = net.with_prediction("f(W z)")
        return net, pcl.PaperEuler(dt=dt, steps=T), bp_s, pc_s
    return net, pcl.default_solver(net), bp_s, pc_s


@contextlib.contextmanager
def residuals_reported():
    """Within this context, ``pcl.train`` / ``pcl.train_many`` do not warn about inference that
    ended above its tolerance: for the experiments that report every run's residual themselves
    (in a claim, a finding or a note), where the warning would say it twice."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"train(_many)?: PC inference ended above", category=RuntimeWarning)
        yield


_RESUME_DIR: contextvars.ContextVar = contextvars.ContextVar("pclandscape_resume_dir", default=None)


@contextlib.contextmanager
def resume_dir(path):
    """Within this context, :func:`resumable` and :func:`resume_path` keep an experiment's
    finished parts in ``path`` (``runner.run_experiment`` sets one per output folder and
    config, and removes it once the run is complete), so that a run interrupted after hours
    picks up where it stopped when it is started again with the same config."""
    token = _RESUME_DIR.set(None if path is None else Path(path))
    try:
        yield
    finally:
        _RESUME_DIR.reset(token)


def resume_path(name: str) -> Path | None:
    """A file path for a part of the current run that survives an interrupt (e.g. a training
    checkpoint), or None outside :func:`resume_dir`."""
    root = _RESUME_DIR.get()
    if root is None:
        return None
    root.mkdir(parents=True, exist_ok=True)
    return root / name


def checkpoint_path(tag: str, part: str | None = None) -> Path | None:
    """The training checkpoint (``pcl.train_many(checkpoint=...)``) of the part ``tag`` of the
    current run (``part`` tells apart several inside it), or None outside :func:`resume_dir`.
    A long grid interrupted mid-way resumes from it; :func:`resumable` and
    :func:`resumable_record` delete a part's checkpoints once its results are kept."""
    return resume_path(f"{tag}.ckpt" if part is None else f"{tag}.{part}.ckpt")


def _drop_checkpoints(tag: str) -> None:
    root = _RESUME_DIR.get()
    if root is not None and root.is_dir():
        for p in [root / f"{tag}.ckpt", *root.glob(f"{glob.escape(tag)}.*.ckpt")]:
            p.unlink(missing_ok=True)


def resumable(tag: str, compute, n: int):
    """``compute()`` (a tuple of ``n`` :class:`pclandscape.History`), or the tuple a previous,
    interrupted run of the same config saved under ``tag`` (see :func:`resume_dir`)."""
    paths = [resume_path(f"{tag}.{i}.npz") for i in range(n)]
    if paths[0] is not None and all(p.is_file() for p in paths):
        return tuple(pcl.History.load(p) for p in paths)
    out = compute()
    if paths[0] is not None:
        for h, p in zip(out, paths):
            h.save(p)
        _drop_checkpoints(tag)
    return out


def resumable_record(tag: str, compute) -> dict:
    """``compute()`` (a dict of JSON values: numbers, including inf and nan, strings, lists,
    dicts), or the dict a previous, interrupted run of the same config saved under ``tag``
    (see :func:`resume_dir`). For the parts of an experiment that are measurements rather
    than training histories (:func:`resumable`). The file is written whole or not at all."""
    path = resume_path(f"{tag}.json")
    if path is not None and path.is_file():
        return json.loads(path.read_text())
    out = compute()
    if path is not None:
        atomic_write(path, lambda f: f.write(json.dumps(out).encode()))
        _drop_checkpoints(tag)
    return out


def grid_batch_keys(seeds, n_lr: int):
    """Each member's batch-order key for a grid of ``n_lr`` learning rates x ``seeds``, lr-major:
    seed ``s`` draws its batches from ``jax.random.key(s + 1)`` at every learning rate (its
    initial weights from ``key(s)``), so the members of one seed differ by the learning rate only."""
    return jnp.concatenate([jax.vmap(lambda s: jax.random.key(s + 1))(jnp.asarray(seeds))] * n_lr)


def escape_step(loss: np.ndarray, fraction: float = 0.5, window: int = 5) -> int | None:
    """First step at which the loss is below ``fraction`` times its plateau value.

    The plateau value is the median of the first ``window`` steps (the network starts at
    the saddle). None if it never escapes.
    """
    loss = np.asarray(loss, np.float64)
    if loss.size == 0:
        return None
    plateau = float(np.median(loss[:window]))
    below = np.nonzero(loss < fraction * plateau)[0]
    return int(below[0]) if below.size else None


def grid_member(nets, i: int):
    """Member ``i`` of the stacked networks of a grid (``pcl.train_many``'s first output)."""
    return jax.tree_util.tree_map(lambda a: a[i] if eqx.is_array(a) else a, nets)


def final_residuals(nets, members, x, y, solver) -> dict:
    """The end-of-training check of PC's equilibria, for a grid's ``members`` (indices into the
    stacked ``nets`` that ``pcl.train_many`` returned): inference by ``solver`` with each
    member's final weights on ``(x, y)``, checked in float64 (:func:`pclandscape.verify_equilibrium`:
    one :class:`pclandscape.EquilibriumCheck` per member). The float32 residual a solver stops
    on carries rounding of the order of a 1e-5 tolerance on wide nets
    (``benchmarks/residual_floor.py``); the float64 one is the point's own."""
    out = {}
    for i in members:
        net = grid_member(nets, i)
        out[i] = pcl.verify_equilibrium(net, x, y, pcl.infer(net, x, y, solver))
    return out


def float64_finding(residual64: dict, cells, tol: float, digits: int, sep: str = "; ") -> tuple[str, bool]:
    """``(text, passed)`` of the float64 half of an equilibrium finding: each cell's largest float64
    residual of its final equilibria (:func:`final_residuals`), "not measured" where a cell has none
    (or NaN); passed when every cell was measured and is ``<= tol``."""
    shown = [f"{k}: {residual64[k]:.{digits}e}" if np.isfinite(residual64.get(k, np.nan)) else f"{k}: not measured"
             for k in cells]
    ok = all(np.isfinite(residual64.get(k, np.nan)) and residual64[k] <= tol for k in cells)
    return "float64 at the end: " + sep.join(shown), bool(ok)


@functools.lru_cache(maxsize=None)
def sgd(lr: float) -> optax.GradientTransformation:
    """``optax.sgd(lr)``, one object per learning rate: the compiled training loops are cached
    on the optimiser's identity, so a fresh ``optax.sgd`` per call would recompile each time."""
    return optax.sgd(lr)


def fmt(v, digits: int = 3) -> str:
    """Compact number formatting for claims."""
    if v is None:
        return "never"
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    return f"{v:.{digits}g}"


def data_label(requested: str, ds) -> str:
    """The tag of a data set in claims and arrays: its own name, with the one asked for when a
    fallback replaced it (``"fashion_mnist-for-mnist"``), so no result is tagged with data it
    did not use and two fallbacks to the same set stay apart."""
    return requested if ds.name == requested else f"{ds.name}-for-{requested}"


def load_data(results: Results, name: str, config, fallback=(), **kw):
    """``pcl.data.load`` from ``config.data_dir`` that records which data set was used (and any
    fallback) in ``results``; ``fallback`` is tried only where ``config.data_fallback`` is true."""
    ds = pcl.data.load(name, config.data_dir, fallback=fallback if config.data_fallback else (), **kw)
    results.use_data(ds)
    return ds


def parse_scalar(text: str):
    """A ``--set`` value as the scalar it spells: an int, a float, None (``none``/``null``),
    a bool (``true``/``false``), else the string (surrounding quotes removed)."""
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text.strip("'\"")


def seeds_from_text(text: str) -> tuple[int, ...]:
    """Seeds written as ranges and lists: ``"0-4"`` -> (0, 1, 2, 3, 4), ``"0,2,5"`` -> (0, 2, 5),
    ``"3"`` -> (3,). Raises ``ValueError`` for anything else (an empty text, a reversed range)."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part[1:]:
            a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
            lo, hi = int(a), int(b)
            if hi < lo:
                raise ValueError(f"seeds {text!r}: the range {part} is reversed")
            out.extend(range(lo, hi + 1))
        elif part:
            out.append(int(part))
    if not out:
        raise ValueError(f"seeds {text!r}: no seed")
    return tuple(out)


# --------------------------------------------------------------------------- config checks

_MAY_BE_ZERO = ("init_std", "until_loss")  # suffixes of float fields where 0 is meaningful


def _field_problem(name: str, value, typ) -> str | None:
    """Why ``value`` is not valid for config field ``name`` of type ``typ``, or None."""
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        return None if value is None else _field_problem(name, value, args[0])
    if typ is bool:
        return None if isinstance(value, bool) else "must be true or false"
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            return "must be a positive integer"
        return None
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
            return "must be a finite number"
        if value < 0 or (value == 0 and not name.endswith(_MAY_BE_ZERO)):
            return "must be a number >= 0" if name.endswith(_MAY_BE_ZERO) else "must be a positive number"
        if ("fraction" in name or name == "masked") and value > 1:
            return "must be a fraction in (0, 1]"
        return None
    if typ is tuple or typing.get_origin(typ) is tuple:
        if not isinstance(value, tuple) or len(value) == 0:
            return "must be a non-empty comma-separated list"
        numeric = [v for v in value if not isinstance(v, str)]
        if name == "seeds" or name.endswith(("depths", "widths", "channels", "_seeds")):
            if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < (0 if "seeds" in name else 1)
                   for v in value):
                return "must hold " + ("non-negative integers (e.g. 0,1,2)" if "seeds" in name else "positive integers")
        elif numeric and len(numeric) == len(value):
            if any(isinstance(v, bool) or not math.isfinite(v) or v <= 0 for v in numeric):
                return "must hold positive finite numbers"
        return None
    return None


def validate_config(config) -> None:
    """Check every field of an experiment config by its type (resolved type hints), before
    anything runs: ints positive, floats finite and positive (``>= 0`` for ``*init_std`` and
    ``*until_loss``; fractions at most 1), tuples non-empty (seeds non-negative integers;
    depths, widths and channels positive integers; numbers positive), Optional fields None or
    valid; a field named in the config class's ``CHOICES`` (``{field: allowed values}``) one of
    its values. Raises one ``ValueError`` naming the field, the value and the rule."""
    from .solvers import SolverSpec

    hints = typing.get_type_hints(type(config))
    choices = getattr(type(config), "CHOICES", {})
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in choices and value not in choices[f.name]:
            raise ValueError(f"{f.name}={value!s}: must be one of {', '.join(map(str, choices[f.name]))} "
                             f"({type(config).__module__.rsplit('.', 1)[-1]} config).")
        if isinstance(value, SolverSpec):
            value.check()  # raises ValueError naming the solver and the option
            continue
        problem = _field_problem(f.name, value, hints.get(f.name, f.type))
        if problem:
            shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
            raise ValueError(f"{f.name}={shown!s}: {problem} ({type(config).__module__.rsplit('.', 1)[-1]} config).")
