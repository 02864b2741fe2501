"""Sweeps: grids of experiment runs on Ray, resumable and fault-tolerant.

A sweep spec (TOML, or the same keys as a dict) names experiments, fixed ``--set``
overrides, a grid of overrides (cartesian product) and/or explicit points, seeds and per-cell
resources::

    title = "fig2: the chains' escape against the learning rate"
    experiment = "fig2"            # or: experiments = ["fig2", "fig12"]
    quick = true                   # start from the quick configs
    seeds = [0, 1, 2]              # or "0-4"; absent: each experiment's own seeds, one cell
    batch_seeds = false            # true: one cell per grid point running all its seeds
    max_retries = 2                # retries of a cell whose worker process died
    figures = true                 # each cell's own figures (the sweep report plots the aggregate)

    [set]                          # applied to every cell (lists become "a,b,c")
    chain_depths = [1]

    [grid]                         # cartesian product
    chain_lr = [0.1, 0.4]

    [[points]]                     # explicit points, after the grid's
    chain_lr = 0.8

    [resources]                    # per cell (Ray task options)
    num_cpus = 1
    num_gpus = 0

A key may be written ``NAME.key`` to apply to experiment ``NAME`` only; an unprefixed key must
belong to every experiment of the spec. A **cell** is one experiment at one grid point and one
seed (or all seeds, with ``batch_seeds``): one Ray task that calls the runner ``pclandscape
run`` uses and writes ``OUT/cells/<experiment>-<config hash>/`` (``NAME/results.json`` and
figures, written atomically; ``cell.json``; ``attempts``, one line per start; ``error.json`` when
it raised). A cell whose results exist for the same config hash is skipped, so an interrupted
sweep resumes where it stopped. A cell whose worker dies is retried by Ray (``max_retries``);
a cell that raises records ``error.json`` (message, traceback, attempts) and the sweep goes on.
Then :mod:`.aggregate` writes ``OUT/sweep.json`` and the sweep report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import socket
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .._io import atomic_write, jsonable
from ..errors import first_line
from .._progress import Progress
from . import runner
from .base import seeds_from_text

__all__ = ["SweepSpec", "SweepCell", "SweepOutcome", "load_spec", "run_sweep", "cell_dir"]

_SPEC_KEYS = ("title", "experiment", "experiments", "quick", "seeds", "batch_seeds", "max_retries", "figures", "set",
              "grid", "points", "resources")
_RESOURCE_KEYS = ("num_cpus", "num_gpus")


def _text(value) -> str:
    """A TOML value as the text of a ``--set`` override (lists comma-joined)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return str(value)


def _seeds(value) -> tuple[int, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return seeds_from_text(value)
        except ValueError:
            raise ValueError(f"sweep spec: seeds {value!r}: expected a range like \"0-4\" or a list like "
                             f"\"0,1,2\".") from None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in value):
        raise ValueError(f"sweep spec: seeds = {value!r}: expected a list of non-negative integers or a range like \"0-4\".")
    return tuple(value)


@dataclass(frozen=True)
class SweepSpec:
    """A parsed, checked sweep spec (see the module docstring for the keys).

    ``fixed``: the ``[set]`` overrides; ``grid``: axis name -> values (as ``--set`` text);
    ``points``: explicit points (dicts of text); ``seeds``: None for each experiment's own.
    """

    experiments: tuple[str, ...]
    quick: bool = False
    seeds: tuple[int, ...] | None = None
    batch_seeds: bool = False
    fixed: tuple[tuple[str, str], ...] = ()
    grid: tuple[tuple[str, tuple[str, ...]], ...] = ()
    points: tuple[tuple[tuple[str, str], ...], ...] = ()
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    max_retries: int = 2
    figures: bool = True
    title: str = ""
    source: dict = field(default_factory=dict, compare=False)

    @property
    def axes(self) -> tuple[str, ...]:
        """The swept keys, in order: the grid's, then any only the explicit points set."""
        names = [k for k, _ in self.grid]
        for p in self.points:
            names += [k for k, _ in p if k not in names]
        return tuple(names)

    def grid_points(self) -> list[tuple[tuple[str, str], ...]]:
        """Every point: the grid's cartesian product, then the explicit points (one empty point
        when neither is given)."""
        out = []
        if self.grid:
            keys = [k for k, _ in self.grid]
            out += [tuple(zip(keys, combo)) for combo in itertools.product(*(v for _, v in self.grid))]
        out += list(self.points)
        return out or [()]

    def cells(self) -> list["SweepCell"]:
        """The sweep's cells, in order: experiment, grid point, seed; a cell that repeats an
        earlier one (the same config, e.g. an explicit point on the grid) appears once. A cell
        whose config is invalid (a bad value) carries the error in ``problem`` instead of a
        config."""
        cells = []
        for name in self.experiments:
            for point in self.grid_points():
                overrides = [_for(name, k, v) for k, v in self.fixed + point]
                overrides = [o for o in overrides if o is not None]
                groups = [None] if self.seeds is None else ([self.seeds] if self.batch_seeds else [(s,) for s in self.seeds])
                for seeds in groups:
                    cells.append(_make_cell(name, point, seeds, tuple(overrides), self.quick, self.figures))
        unique: dict[str, SweepCell] = {}
        for c in cells:
            unique.setdefault(c.id, c)
        return list(unique.values())


def _for(name: str, key: str, value: str) -> str | None:
    """The override ``key=value`` as it applies to experiment ``name`` (None: another's)."""
    target, dot, rest = key.partition(".")
    if dot and target in runner.EXPERIMENTS:
        return f"{rest}={value}" if target == name else None
    return f"{key}={value}"


def _make_cell(name, point, seeds, overrides, quick, figures) -> "SweepCell":
    try:
        cfg = runner.make_config(name, quick=quick, seeds=seeds, overrides=list(overrides))
    except ValueError as e:
        blob = json.dumps([name, list(overrides), seeds, quick]).encode()
        return SweepCell(name, point, seeds, overrides, quick, figures,
                         f"{name}-invalid-{hashlib.sha256(blob).hexdigest()[:12]}", None, str(e))
    return SweepCell(name, point, seeds, overrides, quick, figures, f"{name}-{runner.config_hash(cfg)}", cfg, None)


@dataclass(frozen=True)
class SweepCell:
    """One experiment at one grid point and seed(s): ``id`` names its folder under
    ``OUT/cells/``; ``config`` is None and ``problem`` says why when the overrides are invalid."""

    experiment: str
    point: tuple[tuple[str, str], ...]
    seeds: tuple[int, ...] | None
    overrides: tuple[str, ...]
    quick: bool
    figures: bool
    id: str
    config: Any = None
    problem: str | None = None

    def describe(self) -> str:
        point = " ".join(f"{k}={v}" for k, v in self.point) or "(no swept keys)"
        seeds = "default seeds" if self.seeds is None else "seeds " + ",".join(map(str, self.seeds))
        return f"{self.experiment} {point} {seeds}"

    def to_dict(self) -> dict:
        return {"id": self.id, "experiment": self.experiment, "point": dict(self.point),
                "seeds": None if self.seeds is None else list(self.seeds), "overrides": list(self.overrides),
                "quick": self.quick, "figures": self.figures}


def load_spec(spec) -> SweepSpec:
    """A :class:`SweepSpec` from a TOML file path, a dict of the same keys, or a spec.

    Raises ``ValueError`` (one line) for an unknown key or experiment, a grid key that an
    experiment does not have, an empty grid axis, or bad seeds / resources.
    """
    if isinstance(spec, SweepSpec):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"sweep spec {path} not found; pass a TOML file (see 'pclandscape sweep --help').")
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib
        try:
            spec = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"sweep spec {path} is not valid TOML: {e}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"a sweep spec is a TOML file, a dict or a SweepSpec, not {type(spec).__name__}.")
    unknown = sorted(set(spec) - set(_SPEC_KEYS))
    if unknown:
        raise ValueError(f"sweep spec: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(_SPEC_KEYS)}.")
    names = spec.get("experiments", spec.get("experiment"))
    if "experiment" in spec and "experiments" in spec:
        raise ValueError("sweep spec: give 'experiment' or 'experiments', not both.")
    names = [names] if isinstance(names, str) else names
    if not names or not isinstance(names, list):
        raise ValueError("sweep spec: name the experiments: experiment = \"fig2\" or experiments = [\"fig2\", ...].")
    for n in names:
        if n not in runner.EXPERIMENTS:
            raise ValueError(f"sweep spec: unknown experiment {n!r}; choose from: {', '.join(runner.EXPERIMENTS)}.")
    fixed = _table(spec, "set")
    grid = _table(spec, "grid")
    points = spec.get("points", [])
    if not isinstance(points, list) or any(not isinstance(p, dict) or not p for p in points):
        raise ValueError("sweep spec: [[points]] are tables of key = value, each with at least one key.")
    for axis, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"sweep spec: grid axis {axis} must be a non-empty list of values.")
    for key in [*fixed, *grid, *(k for p in points for k in p)]:
        _check_key(key, names)
    resources = _table(spec, "resources")
    bad = sorted(set(resources) - set(_RESOURCE_KEYS))
    if bad:
        raise ValueError(f"sweep spec: unknown resource(s) {', '.join(bad)}; known: {', '.join(_RESOURCE_KEYS)}.")
    for k, v in resources.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ValueError(f"sweep spec: resources.{k} = {v!r}: expected a number >= 0.")
    retries = spec.get("max_retries", 2)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"sweep spec: max_retries = {retries!r}: expected an integer >= 0.")
    for key in ("quick", "batch_seeds", "figures"):
        if not isinstance(spec.get(key, False), bool):
            raise ValueError(f"sweep spec: {key} = {spec[key]!r}: expected true or false.")
    seeds = _seeds(spec.get("seeds"))
    if spec.get("batch_seeds") and seeds is None:
        raise ValueError("sweep spec: batch_seeds = true needs seeds = [...] to batch.")
    return SweepSpec(
        experiments=tuple(names), quick=bool(spec.get("quick", False)), seeds=seeds,
        batch_seeds=bool(spec.get("batch_seeds", False)),
        fixed=tuple((k, _text(v)) for k, v in fixed.items()),
        grid=tuple((k, tuple(_text(v) for v in values)) for k, values in grid.items()),
        points=tuple(tuple((k, _text(v)) for k, v in p.items()) for p in points),
        num_cpus=float(resources.get("num_cpus", 1)), num_gpus=float(resources.get("num_gpus", 0)),
        max_retries=retries, figures=spec.get("figures", True), title=str(spec.get("title", "")), source=jsonable(spec))


def _table(spec: dict, key: str) -> dict:
    value = spec.get(key, {})
    if not isinstance(value, dict):
        raise ValueError(f"sweep spec: [{key}] must be a table of key = value.")
    return value


def _check_key(key: str, names) -> None:
    """An unknown override key is a typo that would fail every cell: refuse the spec."""
    target, dot, rest = key.partition(".")
    if dot and target in runner.EXPERIMENTS:
        if target not in names:
            raise ValueError(f"sweep spec: {key}: experiment {target} is not in this sweep.")
        names, key = [target], rest
    for n in names:
        fields = {f.name for f in dataclasses.fields(runner.get(n).Config)}
        if key.split(".", 1)[0] not in fields:
            raise ValueError(f"sweep spec: {key} is not a config key of {n} (write NAME.KEY to set a key of one experiment only; "
                             f"keys of {n}: {', '.join(sorted(fields))}).")


# --------------------------------------------------------------------------- one cell (runs on a Ray worker)


def cell_dir(out, cell: SweepCell | str) -> Path:
    """The folder of a cell: ``out/cells/<cell id>``."""
    return Path(out) / "cells" / (cell if isinstance(cell, str) else cell.id)


def _attempts(folder: Path) -> int:
    try:
        return len((folder / "attempts").read_text().splitlines())
    except OSError:
        return 0


def _write_error(folder: Path, message: str, kind: str, trace: str, attempts: int) -> dict:
    error = {"message": message, "type": kind, "traceback": trace, "attempts": attempts, "host": socket.gethostname(),
             "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "error.json", lambda f: f.write(json.dumps(error, indent=1).encode()))
    return error


def run_cell(cell: dict, out: str) -> dict:
    """Run one cell (a :meth:`SweepCell.to_dict`) into ``out/cells/<id>/``; the body of a Ray task.

    ``cell["cwd"]``, the driver's working folder, becomes the worker's where it exists (on
    the driver's machine), so relative data paths resolve as they would for ``pclandscape run``.

    Appends ``pid host time`` to the cell's ``attempts`` file first (a retried cell has one
    line per start), rebuilds the config from the overrides (so a remote worker needs only the
    text) and calls :func:`runner.run_experiment`. An exception is recorded in ``error.json``
    and returned as ``{"status": "failed"}``: the sweep goes on. A killed worker returns
    nothing; Ray retries the task.
    """
    if cell.get("cwd") and Path(cell["cwd"]).is_dir():  # relative data paths as on the driver (./data)
        os.chdir(cell["cwd"])
    folder = cell_dir(out, cell["id"])
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "attempts", "a") as f:
        f.write(f"{os.getpid()} {socket.gethostname()} {time.time():.3f}\n")
    attempt = _attempts(folder)
    (folder / "error.json").unlink(missing_ok=True)
    atomic_write(folder / "cell.json", lambda f: f.write(json.dumps(cell, indent=1).encode()))
    start = time.perf_counter()
    try:
        seeds = None if cell["seeds"] is None else tuple(cell["seeds"])
        cfg = runner.make_config(cell["experiment"], quick=cell["quick"], seeds=seeds, overrides=cell["overrides"])
        runner.run_experiment(cell["experiment"], cfg, folder, progress=False, quick=cell["quick"],
                              figures=cell.get("figures", True))
    except Exception as e:  # noqa: BLE001 - any failure of the cell is recorded, the sweep goes on
        first = first_line(e)
        _write_error(folder, first, type(e).__name__, traceback.format_exc(), attempt)
        return {"id": cell["id"], "status": "failed", "error": first, "attempts": attempt,
                "wall_s": time.perf_counter() - start}
    return {"id": cell["id"], "status": "done", "attempts": attempt, "wall_s": time.perf_counter() - start}


# --------------------------------------------------------------------------- the driver


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` did: every cell with its status (``"done"``, ``"skipped"``: done
    by an earlier run, ``"failed"``), and the paths it wrote."""

    out: Path
    cells: list[SweepCell]
    status: dict[str, dict]
    wall_s: float = 0.0
    report: tuple[Path, Path] | None = None

    @property
    def failed(self) -> list[SweepCell]:
        return [c for c in self.cells if self.status.get(c.id, {}).get("status") == "failed"]

    def count(self, status: str) -> int:
        return sum(1 for c in self.cells if self.status.get(c.id, {}).get("status") == status)


def _ray():
    try:
        import ray
    except ImportError:
        raise ValueError("sweeps run on Ray, which is not installed: pip install 'pclandscape[sweep]' "
                         "(make install includes it).") from None
    return ray


def _start_ray(address: str | None, num_cpus: int | None):
    """Join ``address`` or start an embedded local Ray; returns (ray, whether we started it)."""
    import logging

    ray = _ray()
    if ray.is_initialized():
        return ray, False
    kw = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        with warnings.catch_warnings():
            # Ray starts its processes with fork + exec, which is safe; JAX warns about any fork
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            if address:
                ray.init(address=address, **kw)
            else:
                ray.init(num_cpus=num_cpus or os.cpu_count(), **kw)
    except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
        where = f"join the Ray cluster at {address}" if address else "start a local Ray"
        first = first_line(e)
        hint = " (is 'ray start --head' running there?)" if address else ""
        raise ValueError(f"could not {where}: {first}{hint}") from None
    return ray, True


def run_sweep(spec, out: str | os.PathLike | None = None, *, address: str | None = None, max_retries: int | None = None,
              num_cpus: int | None = None, force: bool = False, progress: bool | None = None,
              log: Callable[[str], None] | None = None) -> SweepOutcome:
    """Run every cell of a sweep on Ray, then write ``out/sweep.json`` and the sweep report.

    **Arguments:**

    - ``spec``: a TOML path, a dict or a :class:`SweepSpec` (:func:`load_spec`).
    - ``out``: the sweep's folder (cells in ``out/cells/``); default ``sweeps/<spec file's
      name>`` (``sweeps/sweep`` for a dict), as for the command.
    - ``address``: None starts an embedded local Ray on this machine's cores (``num_cpus``
      of them when given), shut down at the end; ``"auto"`` or ``"ray://host:port"`` joins a
      running cluster (every node needs pclandscape installed and the data sets). A Ray
      already initialised in this process is used as it is.
    - ``max_retries``: retries of a cell whose worker died (default: the spec's, else 2).
    - ``force``: rerun cells whose results exist.
    - ``progress``: a bar over the cells with ETA (None: when stderr is a terminal).
    - ``log``: called with one line per finished cell (the CLI prints them).

    A cell whose results exist for the same config hash is skipped. An interrupt (Ctrl-C)
    cancels the running cells, writes the aggregate of the finished ones and raises
    ``KeyboardInterrupt``; a rerun continues. Raises ``ValueError`` for a bad spec or an
    unwritable ``out``; a failed cell does not raise (see :attr:`SweepOutcome.failed`).
    """
    from . import aggregate

    if out is None:
        out = Path("sweeps") / (Path(spec).stem if isinstance(spec, (str, os.PathLike)) else "sweep")
    spec = load_spec(spec)
    retries = spec.max_retries if max_retries is None else int(max_retries)
    if retries < 0:
        raise ValueError(f"max_retries={retries}: expected an integer >= 0.")
    cells = spec.cells()
    out = runner.check_output_dir(out).resolve()  # the workers' working folder may differ
    status: dict[str, dict] = {}
    start = time.perf_counter()
    say = log or (lambda line: None)
    with runner.OutputLock(out):
        atomic_write(out / "spec.json", lambda f: f.write(json.dumps(spec.source, indent=1).encode()))
        pending = []
        for cell in cells:
            folder = cell_dir(out, cell)
            if cell.problem is not None:
                status[cell.id] = {"status": "failed", "error": cell.problem, "attempts": 0}
                _write_error(folder, cell.problem, "ValueError", "", 0)
                atomic_write(folder / "cell.json", lambda f, c=cell: f.write(json.dumps(c.to_dict(), indent=1).encode()))
                say(f"failed  {cell.describe()}: {cell.problem}")
            elif not force and runner.is_done(folder, cell.experiment, cell.config):
                status[cell.id] = {"status": "skipped"}
            else:
                pending.append(cell)
        if status:
            n_skip = sum(1 for s in status.values() if s["status"] == "skipped")
            say(f"{n_skip} of {len(cells)} cells done by an earlier run (skipped), {len(pending)} to run")
        try:
            if pending:
                _run_pending(pending, out, spec, retries, address, num_cpus, status, progress, say)
        finally:
            outcome = SweepOutcome(out, cells, status, time.perf_counter() - start)
            outcome.report = aggregate.write_sweep(out, spec, cells, status)
    return outcome


def _run_pending(pending, out, spec, retries, address, num_cpus, status, progress, say) -> None:
    ray, started = _start_ray(address, num_cpus)
    task = ray.remote(run_cell).options(num_cpus=spec.num_cpus, num_gpus=spec.num_gpus, max_retries=retries,
                                        retry_exceptions=False)
    refs = {task.remote(dict(c.to_dict(), cwd=os.getcwd()), str(out)): c for c in pending}
    bar = Progress(len(pending), desc="sweep", enabled=progress)
    try:
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1, timeout=0.5)
            if not done:
                bar.update(0)  # raises an interrupt that Python swallowed
                continue
            cell = refs.pop(done[0])
            try:
                result = ray.get(done[0])
            except Exception as e:  # noqa: BLE001 - the worker died more often than max_retries allows
                folder = cell_dir(out, cell)
                first = first_line(e)
                message = f"the worker running this cell died ({type(e).__name__}: {first}) after {_attempts(folder)} attempts"
                _write_error(folder, message, type(e).__name__, str(e), _attempts(folder))
                result = {"id": cell.id, "status": "failed", "error": message, "attempts": _attempts(folder)}
            status[cell.id] = result
            wall = result.get("wall_s")
            say(f"{result['status']:7s} {cell.describe()}" + (f" in {wall:.1f} s" if wall is not None else "")
                + (f" (attempt {result['attempts']})" if result.get("attempts", 1) > 1 else "")
                + (f": {result['error']}" if result.get("error") else ""))
            bar.update(1, last=cell.experiment)
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()
        if started:
            ray.shutdown()
