"""The record of a training run, :class:`History`, and its file format."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import atomic_write, jsonable

__all__ = ["History", "FORMAT_VERSION", "check_version"]


FORMAT_VERSION = 1
"""Version of the History / checkpoint file formats written by this package."""


def check_version(path, version) -> None:
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer pclandscape (format version {version}, this one reads up to "
                         f"{FORMAT_VERSION}); upgrade pclandscape to read it.")


@dataclass
class History:
    """What :func:`train` measured. Arrays are NumPy; ``step`` is 0-based.

    Attributes:
        rule: ``"pc"`` or ``"bp"``.
        loss: per training step, the MSE loss (Eq 1) of its batch at the feedforward pass
            (each per-step array is :class:`StepInfo`'s field of that step).
        energy: per step, the energy (Eq 2) at the inference equilibrium (PC); NaN for BP.
        grad_norm: per step, the L2 norm of the weight gradient, before ``grad_scale``.
        inference_grad_norm: per step, the inference residual ``max_i ||dF_i/dz_i||`` (PC); NaN for BP.
        inference_dt: per step, the step size :class:`pclandscape.PaperEuler` carries into the
            next step; NaN for every other solver and for BP.
        eval_step: the steps (number of updates done) at which the test set was evaluated.
        test_loss: MSE loss on the test set at those steps.
        test_accuracy: argmax accuracy at those steps (NaN for non-one-hot targets).
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
        check_version(source, d.get("version", 1))
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
        check_version(path, version)
        return cls(rule=rule, meta=meta, extra=extra, **kw)

