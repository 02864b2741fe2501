"""Aggregating a sweep: per grid point, statistics over seeds of every scalar the cells report.

The scalars of a cell are read from its ``results.json``, nothing else: every number in its
``series`` (a key is the path of dict keys and list indices, ``escape/paper/mnist_tanh/0``;
a one-element list is its element; ``None``, e.g. a run that never escaped, is kept as a
missing value) and every claim's verdict (``claim/<id>``: 1 passed, 0 failed). A key part
``s<seed>`` names the seed the value belongs to (the experiments tag per-seed results so, e.g.
``mnist_tanh_s3``) and is removed from the key; in a one-seed cell every value belongs to its
seed. Values of a batched cell (``batch_seeds``) without a seed tag are the cell's own and count
once.

Per grid point and scalar: the number of values, the mean, the standard deviation (ddof 1) and
a 95 % percentile-bootstrap interval of the mean over seeds (2000 resamples, fixed seed), with
missing and non-finite values counted apart, never averaged. Written to ``OUT/sweep.json``, the
sweep report (``OUT/sweep_report.md`` / ``.html``) and one figure per experiment and swept axis
(``OUT/figures/``).
"""

from __future__ import annotations

import datetime
import json
import math
import re
from pathlib import Path

import numpy as np

from .._io import atomic_write, jsonable
from .document import Block, Cell, write_document
from .runner import load_results

__all__ = ["cell_scalars", "summarise", "bootstrap_mean", "aggregate", "write_sweep"]

_SEED = re.compile(r"s(\d+)")
N_BOOT = 2000
MAX_PANELS = 12


def _flatten(x, path: tuple[str, ...], out: list) -> None:
    if isinstance(x, dict):
        for k, v in x.items():
            _flatten(v, path + (str(k),), out)
    elif isinstance(x, (list, tuple)):
        if len(x) == 1 and not isinstance(x[0], (dict, list, tuple)):
            _flatten(x[0], path, out)
        else:
            for i, v in enumerate(x):
                _flatten(v, path + (str(i),), out)
    elif x is None or (isinstance(x, (int, float)) and not isinstance(x, bool)):
        out.append((path, None if x is None else float(x)))


def _untag(path: tuple[str, ...], seeds: set[int]) -> tuple[str, int | None]:
    """The key without its ``s<seed>`` parts (split on ``/`` and ``_``) and the seed they named."""
    seed, segments = None, []
    for segment in path:
        parts = []
        for part in segment.split("_"):
            m = _SEED.fullmatch(part)
            if m and int(m.group(1)) in seeds:
                seed = int(m.group(1)) if seed is None else seed
            else:
                parts.append(part)
        if parts:
            segments.append("_".join(parts))
    return "/".join(segments), seed


def cell_scalars(payload: dict) -> dict[int | None, dict[str, float | None]]:
    """The scalars of one experiment's ``results.json``, by seed (None: the cell's own).

    See the module docstring for what counts as a scalar and how a seed is recognised.
    """
    seeds = [int(s) for s in payload.get("seeds") or []]
    default = seeds[0] if len(seeds) == 1 else None
    leaves: list = []
    _flatten(payload.get("series", {}), (), leaves)
    for c in payload.get("claims", []):
        if c.get("passed") is not None:
            leaves.append((("claim", c["id"]), 1.0 if c["passed"] else 0.0))
    out: dict[int | None, dict[str, float | None]] = {}
    for path, value in leaves:
        key, seed = _untag(path, set(seeds))
        out.setdefault(default if seed is None else seed, {})[key] = value
    return out


def bootstrap_mean(values, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean of ``values`` (at least two)."""
    v = np.asarray(values, np.float64)
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))
    lo, hi = np.percentile(v[idx].mean(1), [2.5, 97.5])
    return float(lo), float(hi)


def summarise(values) -> dict:
    """``{n, missing, mean, sd, ci, values}`` of a list of floats and Nones: the statistics of
    the finite values (``sd`` with ddof 1, ``ci`` the bootstrap interval of the mean; None
    where fewer than two values), ``missing`` counting Nones and non-finite values."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(finite)
    return {
        "n": n,
        "missing": len(values) - n,
        "mean": float(np.mean(finite)) if n else None,
        "sd": float(np.std(finite, ddof=1)) if n >= 2 else None,
        "ci": list(bootstrap_mean(finite)) if n >= 2 else None,
        "values": list(values),
    }


def _load(folder: Path, experiment: str) -> dict | None:
    """A cell's results.json, or None where it is missing or unreadable (counted as not finished)."""
    try:
        return load_results(folder, experiment)
    except (OSError, ValueError):  # FileNotFoundError, JSONDecodeError, UnicodeDecodeError
        return None


def aggregate(out, cells, status: dict[str, dict]) -> list[dict]:
    """Per (experiment, grid point): its cells' statuses and :func:`summarise` of every scalar
    over the seeds of its finished cells (read from ``out/cells/<id>/``)."""
    from .sweep import cell_dir

    points: dict[tuple, dict] = {}
    for cell in cells:
        key = (cell.experiment, cell.point)
        p = points.setdefault(key, {"experiment": cell.experiment, "point": dict(cell.point), "cells": 0, "done": 0,
                                    "failed": 0, "seeds": [], "_values": {}, "wall_s": [], "data": []})
        p["cells"] += 1
        state = status.get(cell.id, {}).get("status", "not run")
        payload = _load(cell_dir(out, cell), cell.experiment) if state in ("done", "skipped") else None
        if state == "failed":
            p["failed"] += 1
        if payload is None:
            continue
        p["done"] += 1
        p["seeds"] += payload.get("seeds", [])
        p["wall_s"].append(payload.get("wall_time_s"))
        p["data"] += [d for d in payload.get("data", []) if d not in p["data"]]
        for scalars in cell_scalars(payload).values():
            for k, v in scalars.items():
                p["_values"].setdefault(k, []).append(v)
    out_points = []
    for p in points.values():
        values = p.pop("_values")
        p["metrics"] = {k: summarise(v) for k, v in sorted(values.items())}
        out_points.append(p)
    return out_points


# --------------------------------------------------------------------------- writing


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}"


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _varying(points: list[dict]) -> list[str]:
    """The metrics whose values differ between points or seeds, then the rest."""
    keys = sorted({k for p in points for k in p["metrics"]})
    vary = []
    for k in keys:
        vals = {repr(v) for p in points for v in p["metrics"].get(k, {}).get("values", [])}
        if len(vals) > 1:
            vary.append(k)
    return vary


def _plot_axis(points: list[dict], axis: str, metrics: list[str], path: Path) -> bool:
    """One figure: each metric's mean (95 % interval as error bars) against ``axis``, one line
    per value of the other swept keys. False when there is nothing to plot."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = sorted({p["point"].get(axis) for p in points if axis in p["point"]},
                    key=lambda t: (not _is_number(t), float(t) if _is_number(t) else 0.0, t))
    if len(values) < 2 or not metrics:
        return False
    numeric = all(_is_number(v) for v in values)
    xs = {v: (float(v) if numeric else i) for i, v in enumerate(values)}
    metrics = metrics[:MAX_PANELS]
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    groups: dict[str, list[dict]] = {}
    for p in points:
        if axis in p["point"]:
            rest = ", ".join(f"{k}={v}" for k, v in p["point"].items() if k != axis)
            groups.setdefault(rest, []).append(p)
    for ax, metric in zip(axes.flat, metrics):
        labelled = False
        for label, group in groups.items():
            pts = sorted((xs[p["point"][axis]], p["metrics"].get(metric)) for p in group if p["metrics"].get(metric))
            pts = [(x, m) for x, m in pts if m["mean"] is not None]
            if not pts:
                continue
            x = np.array([t[0] for t in pts])
            y = np.array([t[1]["mean"] for t in pts])
            lo = np.array([t[1]["ci"][0] if t[1]["ci"] else t[1]["mean"] for t in pts])
            hi = np.array([t[1]["ci"][1] if t[1]["ci"] else t[1]["mean"] for t in pts])
            ax.errorbar(x, y, yerr=[y - lo, hi - y], marker="o", capsize=3, label=label or None)
            labelled |= bool(label)
        ax.set_title(metric, fontsize=8)
        ax.set_xlabel(axis)
        if numeric and min(xs.values()) > 0 and max(xs.values()) / min(xs.values()) >= 10:
            ax.set_xscale("log")
        ax.set_xticks(list(xs.values()), values)  # the grid's own values, nothing between
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        if labelled and ax is axes.flat[0]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(f"mean over seeds (95 % bootstrap interval) against {axis}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)
    return True


def write_sweep(out, spec, cells, status: dict[str, dict]) -> tuple[Path, Path]:
    """Write ``out/sweep.json``, the figures and ``out/sweep_report.{md,html}``; return the
    report's paths."""
    out = Path(out)
    points = aggregate(out, cells, status)
    figures: dict[str, list[str]] = {}
    for name in spec.experiments:
        mine = [p for p in points if p["experiment"] == name]
        vary = _varying(mine)
        for axis in spec.axes:
            rel = f"figures/{name}_{re.sub(r'[^A-Za-z0-9_.-]', '_', axis)}.png"
            if _plot_axis(mine, axis, vary, out / rel):
                figures.setdefault(name, []).append(rel)
    cell_rows = []
    for c in cells:
        s = status.get(c.id, {"status": "not run"})
        cell_rows.append(dict(c.to_dict(), status=s.get("status"), error=s.get("error"), attempts=s.get("attempts"),
                              wall_s=s.get("wall_s")))
    payload = {"title": spec.title, "spec": spec.source, "axes": list(spec.axes),
               "generated": datetime.datetime.now().isoformat(timespec="seconds"),
               "counts": {k: sum(1 for r in cell_rows if r["status"] == k) for k in ("done", "skipped", "failed", "not run")},
               "cells": cell_rows, "points": points, "figures": figures}
    atomic_write(out / "sweep.json", lambda f: f.write(json.dumps(jsonable(payload), indent=1).encode()))
    return write_document(_document(payload, spec), out, "sweep_report", "pclandscape sweep report")


def _document(payload: dict, spec) -> list[Block]:
    counts = payload["counts"]
    axes = payload["axes"]
    doc = [
        Block("h1", "pclandscape sweep report" + (f": {spec.title}" if spec.title else "")),
        Block("p", f"Generated {payload['generated']}. Experiments: {', '.join(spec.experiments)} "
                   f"({'quick' if spec.quick else 'full'} configs); swept: {', '.join(axes) or 'nothing'}; seeds: "
                   f"{'each experiment' + chr(39) + 's own' if spec.seeds is None else ','.join(map(str, spec.seeds))}"
                   f"{' (batched per grid point)' if spec.batch_seeds else ''}."),
        Block("bullets", items=(f"cells: {len(payload['cells'])}", f"finished in this run: {counts['done']}",
                                f"finished earlier (skipped): {counts['skipped']}", f"failed: {counts['failed']}")
              + ((f"not run (interrupted): {counts['not run']}",) if counts["not run"] else ())),
        Block("p", "Per grid point, each scalar the experiment reports (numbers in its results' series, and each "
                   "claim's verdict as claim/ID, 1 = passed) over the seeds: mean, standard deviation, 95 % "
                   "percentile-bootstrap interval of the mean (2000 resamples), the number of values n, and "
                   "missing (runs that never reached the event, e.g. never escaped, or non-finite values), "
                   "which are counted, never averaged."),
    ]
    if spec.fixed:
        doc.append(Block("note", "Set in every cell: " + ", ".join(f"{k}={v}" for k, v in spec.fixed)))
    failed = [r for r in payload["cells"] if r["status"] == "failed"]
    if failed:
        doc += [Block("h2", "Failed cells"),
                Block("table", items=(("cell", "experiment", "point", "seeds", "attempts", "error"),
                                      [(r["id"], r["experiment"], _point_text(r["point"]), _seeds_text(r["seeds"]),
                                        str(r.get("attempts") or 0), Cell(r.get("error") or "", css="FAIL"))
                                       for r in failed]))]
    for name in spec.experiments:
        mine = [p for p in payload["points"] if p["experiment"] == name]
        doc.append(Block("h2", name, anchor=name))
        doc.append(Block("table", items=(tuple(axes) + ("cells", "finished", "failed", "seeds", "claims passed"),
                                         [tuple(p["point"].get(a, "") for a in axes)
                                          + (str(p["cells"]), str(p["done"]), str(p["failed"]),
                                             ",".join(map(str, p["seeds"])), _claims_text(p)) for p in mine])))
        data = [d for p in mine for d in p["data"]]
        if data:  # what the cells really used (a fallback says so)
            doc.append(Block("note", "Data: " + "; ".join(dict.fromkeys(data))))
        doc += [Block("image", rel) for rel in payload["figures"].get(name, [])]
        vary = _varying(mine)
        constant = sorted({k for p in mine for k in p["metrics"]} - set(vary))
        if constant:
            first = {k: next(p["metrics"][k] for p in mine if k in p["metrics"]) for k in constant}
            doc.append(Block("note", "The same at every point and seed: " + "; ".join(
                f"{k} = {_fmt(first[k]['mean']) if first[k]['n'] else 'missing'}" for k in constant)))
        rows = []
        for metric in vary:
            for p in mine:
                m = p["metrics"].get(metric)
                if m is None:
                    continue
                ci = f"[{_fmt(m['ci'][0])}, {_fmt(m['ci'][1])}]" if m["ci"] else "-"
                rows.append((metric,) + tuple(p["point"].get(a, "") for a in axes)
                            + (_fmt(m["mean"]), _fmt(m["sd"]), ci, str(m["n"]), str(m["missing"])))
        if rows:
            doc += [Block("title", f"{name}: the scalars that vary, per grid point"),
                    Block("table", items=(("scalar",) + tuple(axes) + ("mean", "sd", "95 % CI", "n", "missing"), rows))]
    doc.append(Block("details", json.dumps(payload["spec"], indent=1, sort_keys=True), items=("spec",)))
    return doc


def _claims_text(p: dict) -> str:
    vals = [v for k, m in p["metrics"].items() if k.startswith("claim/") for v in m["values"] if v is not None]
    return f"{int(sum(vals))}/{len(vals)}" if vals else "-"


def _point_text(point: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in point.items()) or "-"


def _seeds_text(seeds) -> str:
    return "default" if seeds is None else ",".join(map(str, seeds))
