"""The one recorder of a training run, shared by :func:`~pclandscape.train` (both of its
loops) and :func:`~pclandscape.train_many` (one per seed), and its checkpoint file."""

from __future__ import annotations

import json
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from .._io import atomic_write
from ..errors import DivergenceError
from ._evaluate import evaluate
from ._history import FORMAT_VERSION, History, check_version
from ._steps import StepInfo

__all__ = ["Recorder", "ROW_KEYS", "host_row", "read_checkpoint", "write_checkpoint"]

ROW_KEYS = ("loss", "energy", "grad_norm", "inference_grad_norm", "converged", "inference_dt")
"""The :class:`StepInfo` fields recorded per step."""


def host_row(info: StepInfo, index) -> StepInfo:
    """One step's diagnostics out of host arrays stacked over steps (and seeds)."""
    return StepInfo(*(np.asarray(getattr(info, k)[index]) for k in ROW_KEYS))


class Recorder:
    """What a run measured so far: per-step diagnostics, metric values and evaluations.

    ``add`` records one step (a :class:`StepInfo` of scalars), ``add_from`` one step out of
    host arrays stacked over steps (and seeds) as the fused loops return them; ``history``
    builds the :class:`History` at any point (for a checkpoint, a divergence, or the end).
    """

    def __init__(self, rule: str, meta: dict | None = None):
        self.rule = rule
        self.meta = dict(meta or {})
        self.rows: list[StepInfo] = []
        self.extras: dict[str, list] = {}
        self.evals: list[tuple[int, float, float]] = []

    @property
    def steps(self) -> int:
        """The number of steps recorded."""
        return len(self.rows)

    def add(self, info: StepInfo, metrics: dict | None = None) -> None:
        """Record one step: its diagnostics and the values of the user's metrics by name."""
        self.rows.append(info)
        for name, value in (metrics or {}).items():
            self.extras.setdefault(name, []).append(value)

    def add_from(self, info: StepInfo, extra, names, index) -> None:
        """Record the step at ``index`` of host arrays stacked over steps (and seeds): ``info``
        a :class:`StepInfo` of arrays, ``extra`` the metric arrays in the order of ``names``."""
        self.add(host_row(info, index), {name: vals[index] for name, vals in zip(names, extra)})

    def evaluate(self, step: int, net, eval_data) -> None:
        """Evaluate ``net`` on ``eval_data`` (test loss, accuracy) and record it at ``step``."""
        self.evals.append((step, *evaluate(net, *eval_data)))

    def history(self) -> History:
        """The :class:`History` of the steps recorded so far."""
        if self.rows:
            host = jax.device_get(self.rows)  # stack on the host: a device stack of many scalars compiles for minutes
            stacked = {k: np.asarray([np.asarray(getattr(r, k)) for r in host]) for k in ROW_KEYS}
        else:
            stacked = {k: np.zeros(0) for k in ROW_KEYS}
        ev = np.asarray(self.evals, dtype=np.float64).reshape(-1, 3)
        return History(
            rule=self.rule,
            **{k: np.asarray(stacked[k], np.float64) for k in ROW_KEYS if k != "converged"},
            eval_step=ev[:, 0].astype(np.int64),
            test_loss=ev[:, 1],
            test_accuracy=ev[:, 2],
            meta=self.meta,
            extra={k: np.asarray(jax.device_get(v), np.float64) for k, v in self.extras.items()},
        )

    def diverged(self, message: str, step: int, net) -> DivergenceError:
        """The error for a run that diverged at ``step``; it carries the history so far and ``net``."""
        return DivergenceError(message, step=step, history=self.history(), net=net)

    def state(self) -> dict:
        """The recorder as JSON values (its history and evaluations), as checkpoints keep it."""
        return {"history": self.history().to_dict(), "evals": [list(e) for e in self.evals]}

    @classmethod
    def from_state(cls, state: dict, source: str) -> "Recorder":
        """The inverse of :meth:`state`; ``source`` names the file in errors."""
        hist = History.from_dict(state["history"], source=source)
        n = len(hist.loss)
        cols = {k: np.asarray(getattr(hist, k) if k != "converged" else np.ones(n, bool)) for k in ROW_KEYS}
        if len(cols["inference_dt"]) != n:  # a checkpoint written before inference_dt was recorded
            cols["inference_dt"] = np.full(n, np.nan)
        rec = cls(hist.rule, hist.meta)
        rec.rows = [StepInfo(*(cols[k][i] for k in ROW_KEYS)) for i in range(n)]
        rec.extras = {k: list(v) for k, v in hist.extra.items()}
        rec.evals = [tuple(e) for e in state["evals"]]
        return rec

    def save(self, path, net, opt_state) -> None:
        """Write a checkpoint of :func:`~pclandscape.train`: this recorder, then ``(net, opt_state)``."""
        write_checkpoint(path, self.state(), (net, opt_state))

    @classmethod
    def load(cls, path, net, opt_state) -> tuple:
        """``(net, opt_state, Recorder)`` from a checkpoint written by :meth:`save`; ``net`` and
        ``opt_state`` give the structure to read. Raises ``ValueError`` naming what is wrong."""
        header, (net, opt_state) = read_checkpoint(path, (net, opt_state), ("history", "evals"),
                                                   "a checkpoint of pcl.train")
        return net, opt_state, cls.from_state(header, f"checkpoint {path}")


def write_checkpoint(path, header: dict, tree) -> None:
    """Write a checkpoint file atomically: ``header`` (JSON, with the format version added)
    behind its 8-byte length, then the array leaves of ``tree`` (``eqx.tree_serialise_leaves``)."""

    def write(f):
        raw = json.dumps({"version": FORMAT_VERSION, **header}).encode()
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        eqx.tree_serialise_leaves(f, tree)

    atomic_write(path, write)


def read_checkpoint(path, tree, keys: tuple, kind: str) -> tuple[dict, object]:
    """``(header, tree)`` from a file of :func:`write_checkpoint`; ``tree`` gives the structure
    to read, ``keys`` the header entries a checkpoint of this ``kind`` must hold. Raises
    ``ValueError`` naming the file and what is wrong (empty, truncated, another kind of file,
    another network or optimizer, a newer format)."""
    path = Path(path)
    total = path.stat().st_size
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if total < 8 or size == 0 or size > total - 8:
            raise ValueError(f"checkpoint {path} is {'empty' if total == 0 else 'truncated or not a pclandscape checkpoint'} "
                             f"(its header does not fit in its {total} bytes); delete it to start afresh.")
        try:
            header = json.loads(f.read(size).decode("utf-8"))
            if not isinstance(header, dict):
                raise ValueError
        except (UnicodeDecodeError, ValueError):
            raise ValueError(f"checkpoint {path} is not a pclandscape checkpoint (its header is not the expected "
                             f"JSON); delete it or pass another checkpoint path.") from None
        missing = [k for k in keys if k not in header]
        if missing:
            raise ValueError(f"checkpoint {path} is not {kind} (its header lacks {', '.join(missing)}); "
                             f"delete it or pass another checkpoint path.")
        check_version(path, header.get("version", 1))
        try:
            tree = eqx.tree_deserialise_leaves(f, tree)
        except Exception as e:  # noqa: BLE001 - re-raised with context
            raise ValueError(
                f"checkpoint {path} is truncated or does not match this network/optimizer ({type(e).__name__}: {e}); "
                f"delete it or pass another checkpoint path."
            ) from None
    return header, tree
