"""Running experiments and writing their outputs (atomically), resuming interrupted reproductions."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import platform
import shutil
import tempfile
import time
import types
import typing
from pathlib import Path

import numpy as np

from .._io import atomic_write, jsonable, umask
from .._progress import Progress
from .base import Results, parse_scalar, resume_dir, validate_config
from .solvers import SolverSpec

__all__ = [
    "EXPERIMENTS",
    "COST_HINT_S",
    "get",
    "make_config",
    "parse_overrides",
    "config_hash",
    "config_dict",
    "run_experiment",
    "load_results",
    "is_done",
    "check_output_dir",
    "OutputLock",
]

EXPERIMENTS = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig9_10", "fig12", "fair", "mupc")

# Wall seconds of each quick config on one core of a 2-core CPU, beside another experiment on
# the other core (`make demo`, 2026-12-02). Only a scheduling hint: `reproduce --jobs N` hands
# the experiments to its workers longest first, so that the longest does not start last (a
# greedy longest-first schedule ends within 4/3 of the shortest possible).
COST_HINT_S = {"fig1": 64, "fig2": 27, "fig3": 27, "fig4": 66, "fig5": 96, "fig6": 94, "fig9_10": 93,
               "fig12": 24, "fair": 93, "mupc": 206}


def get(name: str):
    """The experiment module called ``name``."""
    if name not in EXPERIMENTS:
        raise KeyError(f"unknown experiment {name!r}; choose from: {', '.join(EXPERIMENTS)} (see 'pclandscape list').")
    return importlib.import_module(f"pclandscape.experiments.{name}")


def _convert(value: str, typ, name: str):
    if typ is SolverSpec or typ == "SolverSpec":
        return SolverSpec.parse(value)
    origin = typing.get_origin(typ)
    args = [a for a in typing.get_args(typ) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:  # Optional[T]: "none" or a T
        return None if value.lower() in ("none", "null") else _convert(value, args[0], name)
    if typ is bool or typ == "bool":
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--set {name}={value}: expected true or false.")
    if typ in (int, "int"):
        return int(value)
    if typ in (float, "float"):
        return float(value)
    if typ in (str, "str"):
        return value
    if typ in (tuple, "tuple") or origin is tuple:
        items = [v for v in value.split(",") if v != ""]
        return tuple(parse_scalar(v) for v in items)
    return parse_scalar(value)


def parse_overrides(config, overrides: list[str]):
    """Apply ``key=value`` strings to a frozen config dataclass (values parsed by field type).

    ``field.option=value`` sets one option of a :class:`~pclandscape.experiments.solvers.SolverSpec`
    field (``solver.tol=1e-6``). Raises ``ValueError`` with a one-line message naming the bad
    key or value.
    """
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))  # resolves postponed annotations ("float | None")
    changes = {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected key=value.")
        key, value = item.split("=", 1)
        key = key.strip()
        field_name, _, option = key.partition(".")
        if option and field_name in fields and hints.get(field_name) is SolverSpec:
            current = changes.get(field_name, getattr(config, field_name))
            changes[field_name] = current.with_option(option, value)
            continue
        if key not in fields:
            raise ValueError(f"--set {key}: unknown key for {type(config).__module__.rsplit('.', 1)[-1]}; known keys: {', '.join(fields)}.")
        typ = hints.get(key, fields[key].type)
        try:
            changes[key] = _convert(value, typ, key)
        except ValueError as e:
            msg = str(e) if str(e).startswith("--set") else f"--set {key}={value}: expected a value of type {getattr(typ, '__name__', typ)}."
            if typ is SolverSpec:
                msg = f"--set {key}={value}: {e}"
            raise ValueError(msg) from None
    return dataclasses.replace(config, **changes)


def make_config(name: str, quick: bool = False, seeds=None, overrides=None):
    """The config of experiment ``name``: paper defaults, or the quick variant, with overrides."""
    mod = get(name)
    cfg = mod.quick_config() if quick else mod.Config()
    if seeds is not None:
        cfg = dataclasses.replace(cfg, seeds=tuple(seeds))
    cfg = parse_overrides(cfg, overrides or [])
    validate_config(cfg)
    return cfg


SECTIONS = {
    "theory": "The theory: exact identities (Thm 1, Eqs 6, 8, 62-65, Thm 3)",
    "paper_code": "The paper's figures under the paper's own training code (in its DNN and matrix-completion "
                  "notebooks PC's step = 320x BP's)",
    "fair": "The paper's claims under the fair comparison (Eqs 1-2, same scale, each rule at its best lr)",
    "beyond": "Beyond the paper: deep residual PCNs (muPC vs SP)",
}
"""The report's three parts, by key; every claim belongs to its experiment's
(:data:`EXPERIMENT_SECTIONS`, written into results.json with each claim)."""

EXPERIMENT_SECTIONS = {"fig1": "theory", "fig3": "theory", "fig4": "theory", "fig9_10": "theory", "fig2": "paper_code",
                       "fig5": "paper_code", "fig6": "paper_code", "fig12": "paper_code", "fair": "fair",
                       "mupc": "beyond"}

_SIZE_TOKENS = {"seeds", "steps", "width", "widths", "depths", "hidden", "channels", "resolution", "train", "test",
                "datasets", "dataset", "activations", "boot", "every", "protocols", "layers"}


def quick_changes(name: str, config) -> list[dict]:
    """How ``config`` differs from experiment ``name``'s defaults (the paper's settings), field by
    field: ``{field, default, value, kind}`` with kind ``"size"`` (sizes, steps, seeds, data: what
    a quick run may shrink) or ``"deviation"`` (anything else: learning rates, initialisation,
    thresholds, batch sizes, inference settings), which the report lists."""
    default = get(name).Config()
    out = []
    for f in dataclasses.fields(config):
        a, b = getattr(default, f.name), getattr(config, f.name)
        if a != b and f.name not in ("data_dir", "data_fallback"):  # where the files are is not a setting
            kind = "size" if set(f.name.split("_")) & _SIZE_TOKENS or f.name == "seeds" else "deviation"
            if isinstance(a, SolverSpec):
                a, b, kind = str(a), str(b), "deviation"
            out.append({"field": f.name, "default": a, "value": b, "kind": kind})
    return out


def config_dict(config) -> dict:
    """The config's fields as JSON-ready values; a solver spec as its text (``"heun(t1=300)"``)."""
    out = dataclasses.asdict(config)
    for f in dataclasses.fields(config):
        if isinstance(getattr(config, f.name), SolverSpec):
            out[f.name] = str(getattr(config, f.name))
    return out


def config_hash(config) -> str:
    """Hash of a config and of its experiment's ``VERSION`` (default 1; an experiment raises it
    when its code changes what a config computes, so ``reproduce`` does not resume from results
    of the old code)."""
    import sys

    fields = config_dict(config)
    if fields.get("data_fallback") is True:  # the default, as before the field existed: old results resume
        del fields["data_fallback"]
    version = getattr(sys.modules.get(type(config).__module__), "VERSION", 1)
    if version != 1:
        fields["__version__"] = version
    blob = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("pclandscape", "jax", "jaxlib", "equinox", "optax", "diffrax", "numpy", "matplotlib"):
        try:
            out[mod] = importlib.import_module(mod).__version__
        except Exception:  # noqa: BLE001 - version reporting must never fail a run
            out[mod] = "unknown"
    return out


def _device() -> str:
    import jax

    d = jax.devices()[0]
    return f"{d.platform}:{getattr(d, 'device_kind', '')}"


def is_done(out_dir: str | os.PathLike, name: str, config) -> bool:
    """True when ``out_dir/name/results.json`` exists for this exact config."""
    path = Path(out_dir) / name / "results.json"
    if not path.is_file():
        return False
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return False
    return isinstance(payload, dict) and payload.get("config_hash") == config_hash(config)


def run_experiment(name: str, config, out_dir: str | os.PathLike, *, progress: bool | None = None, quick: bool = False,
                   figures: bool = True) -> dict:
    """Run one experiment and write ``out_dir/name/``: results.json, figures (PNG + PDF), arrays.npz.

    ``figures=False`` skips the figures (a sweep's cells, whose report plots the aggregate;
    drawing them costs seconds per run).

    The folder is written as a whole: the run writes into a hidden temporary folder beside
    it, which then replaces ``out_dir/name`` (an interrupt leaves the old generation or the
    new one, never a mix; a generation displaced by a killed swap is restored by the next
    run). Experiments that keep finished parts (:func:`base.resumable`) keep them in
    ``out_dir/.NAME.resume-<config hash>/``, so a run interrupted and started again with the
    same config resumes from them; the folder goes once the run is complete. ``out_dir`` is
    checked (creatable, writable, not a file) before anything runs. results.json is written
    last. Returns the results dict.
    """
    mod = get(name)
    validate_config(config)
    final = Path(out_dir) / name
    check_output_dir(out_dir, name)
    recover(final)
    resume = Path(out_dir) / f".{name}.resume-{config_hash(config)}"
    out = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{name}.tmp-"))
    try:
        with resume_dir(resume):
            payload = _run_into(mod, name, config, out, progress, quick, figures)
        _swap_into_place(out, final)
        shutil.rmtree(resume, ignore_errors=True)  # complete: its parts are in the results
    finally:
        if out.exists():
            shutil.rmtree(out, ignore_errors=True)
    return payload


def _run_into(mod, name, config, out: Path, progress, quick, figures=True) -> dict:
    import matplotlib.pyplot as plt

    start = time.perf_counter()
    bar = Progress(getattr(mod, "progress_total", lambda c: 1)(config), desc=name, enabled=progress)
    res: Results = mod.run(config, progress=bar)
    bar.close()
    wall = time.perf_counter() - start
    fig_files = []
    for fname, fig in (mod.plot(res) if figures else {}).items():
        for ext in ("png", "pdf"):
            path = out / f"{fname}.{ext}"
            atomic_write(path, lambda f, fig=fig, ext=ext: fig.savefig(f, format=ext, dpi=120, bbox_inches="tight"))
        fig_files.append(f"{fname}.png")
        plt.close(fig)
    if res.arrays:
        atomic_write(out / "arrays.npz", lambda f: np.savez_compressed(f, **{k: np.asarray(v) for k, v in res.arrays.items()}))
    payload = {
        "name": name,
        "description": mod.DESCRIPTION,
        "config": config_dict(config),
        "config_hash": config_hash(config),
        "seeds": list(getattr(config, "seeds", ())),
        "quick": bool(quick),
        "config_changes": quick_changes(name, config),
        "versions": _versions(),
        "device": _device(),
        "wall_time_s": wall,
        "data": res.data,
        "notes": res.notes,
        "tables": res.tables,
        "claims": [dict(c.to_dict(), section=EXPERIMENT_SECTIONS.get(name, "paper_code")) for c in res.claims],
        "series": jsonable(res.series),
        "figures": fig_files,
        "arrays": "arrays.npz" if res.arrays else None,
    }
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(jsonable(payload), indent=1).encode()))
    return payload


def check_output_dir(out_dir: str | os.PathLike, name: str | None = None) -> Path:
    """Create ``out_dir`` if needed and check that it (and ``out_dir/name`` if it exists) can
    be written, before any computation: ``ValueError`` with one line saying what is wrong."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder; pass a folder (it is created if missing).")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {out} cannot be created ({e.strerror}); pass a folder you can write to.") from None
    targets = [out] + ([out / name] if name and (out / name).is_dir() else [])
    if name and (out / name).exists() and not (out / name).is_dir():
        raise ValueError(f"{out / name} is a file; remove it (the results of {name} go into that folder).")
    for t in targets:
        try:
            fd, probe = tempfile.mkstemp(dir=t, prefix=".write-probe-")
            os.close(fd)
            os.remove(probe)
        except OSError as e:
            raise ValueError(f"{t} is not writable ({e.strerror}); fix its permissions or pass another --out.") from None
    return out


def recover(final: Path) -> None:
    """Put back a generation displaced by a swap that was killed half way, and remove the
    temporary folders of killed runs."""
    parent = final.parent
    old = sorted(parent.glob(f".{final.name}.old-*"))
    if old and not final.exists():
        os.replace(old[-1], final)
        old = old[:-1]
    for p in old + list(parent.glob(f".{final.name}.tmp-*")):
        shutil.rmtree(p, ignore_errors=True)


def _swap_into_place(new: Path, final: Path) -> None:
    """Replace ``final`` by the folder ``new`` with SIGINT held back, so an interrupt lands
    before or after the two renames, never between them."""
    import signal
    import threading

    block = threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask")
    if block:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}-{time.time_ns()}")
            os.replace(final, old)
        os.replace(new, final)
        os.chmod(final, 0o777 & ~umask())  # mkdtemp creates 0700; results are ordinary folders
    finally:
        if block:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class OutputLock:
    """An exclusive lock on an output folder (``out_dir/.lock``, ``flock``): a second run into
    the same folder fails at once with a ``ValueError`` naming the process that holds it. The
    lock goes with the process (also when it is killed)."""

    def __init__(self, out_dir: str | os.PathLike):
        self.path = Path(out_dir) / ".lock"
        self._file = None

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise ValueError(f"{self.path.parent} is in use by {holder}; wait for it to finish or pass another "
                             f"--out.") from None
        f.seek(0)
        f.truncate()
        f.write(f"pclandscape pid {os.getpid()} (started {time.strftime('%Y-%m-%d %H:%M:%S')})")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc):
        if self._file is not None:
            self._file.close()  # releases the flock
            self._file = None
        return False


def load_results(out_dir: str | os.PathLike, name: str) -> dict:
    """The results.json of a finished run."""
    path = Path(out_dir) / name / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results for {name} in {out_dir} (expected {path}); run 'pclandscape run {name}'.")
    return json.loads(path.read_text())
