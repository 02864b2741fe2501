"""The claims report of a results folder: ``report.md`` and a self-contained ``report.html``.

The report is built only from what the runs wrote (``DIR/NAME/results.json`` and the PNG
figures beside it), so it can be regenerated at any time with ``pclandscape report DIR``.
It opens with a summary table (experiment, paper claims passed / total, findings, wall time,
data used), then, per experiment, its figures, data notes (which fallback ran when a data set
was absent), config and claims table (statement, expected, measured, verdict).

The content is built once, as a list of blocks (``_document``); the Markdown and the HTML
file are two renderings of it, so they cannot drift apart.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from .base import PROTOCOL_NOTE
from .document import Block, Cell, write_document
from .runner import EXPERIMENT_SECTIONS, EXPERIMENTS, SECTIONS

__all__ = ["collect", "results_problem", "summary_rows", "section_counts", "write_report", "verdict"]


def collect(out_dir) -> dict[str, dict]:
    """The results.json of every experiment found in ``out_dir``, in the paper's order.

    Raises ``FileNotFoundError`` (one line, with what to do) when the folder holds none.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise FileNotFoundError(f"results folder {out} does not exist; run 'pclandscape reproduce --out {out}' first.")
    found = {}
    names = list(EXPERIMENTS) + sorted(p.name for p in out.iterdir() if p.is_dir() and p.name not in EXPERIMENTS)
    for name in names:
        path = out / name / "results.json"
        if path.is_file():
            try:
                payload = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ValueError(f"{path} is not valid JSON ({e}); delete it and rerun 'pclandscape run {name}'.") from None
            problem = results_problem(payload)
            if problem:
                raise ValueError(f"{path} is not a pclandscape results file: {problem}; delete it and rerun "
                                 f"'pclandscape run {name}'.")
            found[name] = payload
    if not found:
        raise FileNotFoundError(f"no results in {out} (no NAME/results.json); run 'pclandscape reproduce --out {out}' first.")
    return found


_CLAIM_TEXT = ("id", "statement", "expected", "measured")


def results_problem(payload) -> str | None:
    """What makes ``payload`` (a parsed results.json) unusable for the report, or None.

    The schema :func:`~pclandscape.experiments.runner.run_experiment` writes: an object with
    ``name`` (str), ``claims`` (a non-empty list of objects with string ``id``,
    ``statement``, ``expected``, ``measured``, ``passed`` true/false/null and ``category``
    ``"paper"``/``"finding"``/``"skipped"``), ``wall_time_s`` (a number) and ``data`` (a list
    of strings)."""
    if not isinstance(payload, dict):
        return f"it holds a JSON {type(payload).__name__}, not an object"
    for key, typ, what in (("name", str, "a string"), ("claims", list, "a list"), ("data", list, "a list"),
                           ("wall_time_s", (int, float), "a number")):
        if key not in payload:
            return f"the key '{key}' is missing"
        if not isinstance(payload[key], typ) or isinstance(payload[key], bool):
            return f"'{key}' is not {what}"
    if not payload["claims"]:
        return "it holds no claims (every experiment checks at least one)"
    for i, c in enumerate(payload["claims"]):
        if not isinstance(c, dict):
            return f"claim {i} is not an object"
        for key in _CLAIM_TEXT:
            if not isinstance(c.get(key), str):
                return f"claim {i} has no string '{key}'"
        if c.get("passed") not in (True, False, None) or "passed" not in c:
            return f"claim {c['id']}: 'passed' must be true, false or null"
        if c.get("category", "paper") not in ("paper", "finding", "skipped"):
            return f"claim {c['id']}: unknown category {c.get('category')!r}"
    return None


def verdict(c: dict) -> str:
    """PASS / FAIL for a paper claim, YES / NO for a finding (did the stated expectation hold?),
    SKIPPED when it could not be measured."""
    if c.get("verdict"):
        return str(c["verdict"])
    if c.get("passed") is None:
        return "SKIPPED"
    if c.get("category", "paper") == "finding":
        return "YES" if c["passed"] else "NO"
    return "PASS" if c["passed"] else "FAIL"


def _count(claims, category) -> tuple[int, int]:
    # a claim decided in words (the fair comparison's verdict) is a result, not a pass or a failure
    sel = [c for c in claims if c.get("category", "paper") == category and c.get("passed") is not None and not c.get("verdict")]
    return sum(bool(c["passed"]) for c in sel), len(sel)


def summary_rows(results: dict[str, dict]) -> list[dict]:
    """One row per experiment: name, paper claims passed / total (ints and ``"p/t"``), findings
    ``"p/t"``, skipped count, wall time, data."""
    rows = []
    for name, r in results.items():
        claims = r.get("claims", [])
        pp, pt = _count(claims, "paper")
        fp, ft = _count(claims, "finding")
        skipped = sum(c.get("passed") is None for c in claims)
        rows.append(
            dict(
                name=name,
                paper_passed=pp,
                paper_total=pt,
                paper=f"{pp}/{pt}",
                findings=f"{fp}/{ft}",
                skipped=skipped,
                all_paper_pass=pp == pt,
                wall=r.get("wall_time_s", float("nan")),
                data="; ".join(r.get("data", [])) or "-",
                quick=bool(r.get("quick", False)),
            )
        )
    return rows


def _section_of(name: str, c: dict) -> str:
    return c.get("section") or EXPERIMENT_SECTIONS.get(name, "paper_code")


def _empty_section() -> dict:
    return {"passed": 0, "total": 0, "findings": 0, "skipped": 0, "verdicts": [], "claims": []}


def section_counts(results: dict[str, dict]) -> dict[str, dict]:
    """Per report section: paper claims passed / decided, findings, skipped, and the verdicts
    stated in words (the fair comparison's), with the claims themselves."""
    out = {k: _empty_section() for k in SECTIONS}
    for name, r in results.items():
        for c in r.get("claims", []):
            sec = out.setdefault(_section_of(name, c), _empty_section())
            sec["claims"].append((name, c))
            if c.get("verdict"):
                sec["verdicts"].append(f"{c['id']}: {c['verdict']}")
            elif c.get("passed") is None:
                sec["skipped"] += 1
            elif c.get("category", "paper") == "finding":
                sec["findings"] += 1
            else:
                sec["total"] += 1
                sec["passed"] += bool(c["passed"])
    return out


def _not_run(key: str) -> str:
    """What a part with no claims says: ``"not run in this report (its experiments: ...)"``."""
    names = [n for n in EXPERIMENTS if EXPERIMENT_SECTIONS.get(n, "paper_code") == key]
    return f"not run in this report (its experiments: {', '.join(names)})"


def _count_line(key: str, sec: dict) -> str:
    if not sec["claims"]:
        return f"{SECTIONS.get(key, key)}: {_not_run(key)}"
    findings_only = not sec["total"] and not sec["verdicts"] and sec["findings"]
    counts = [f"paper claims passed {sec['passed']}/{sec['total']}"] if sec["total"] or not (sec["verdicts"] or findings_only) \
        else (["findings only"] if findings_only else [])
    if sec["verdicts"]:
        counts.append("verdict " + "; ".join(sec["verdicts"]))
    line = f"{SECTIONS.get(key, key)}: " + "; ".join(counts)
    return line + f" ({sec['findings']} findings, {sec['skipped']} skipped or undecided)"


def _is_quick(results) -> bool:
    return any(r.get("quick") for r in results.values())


def _changes_text(r: dict) -> str:
    dev = [c for c in r.get("config_changes", []) if c["kind"] == "deviation"]
    size = [c for c in r.get("config_changes", []) if c["kind"] == "size"]
    parts = []
    if dev:
        parts.append("Deviations from the paper's settings: " + ", ".join(f"{c['field']} = {c['value']} (paper: {c['default']})" for c in dev))
    if size:
        parts.append("Shrunk: " + ", ".join(f"{c['field']} = {c['value']} (paper: {c['default']})" for c in size))
    return ". ".join(parts)


# --------------------------------------------------------------------------- the document


def _config_text(r: dict) -> str:
    return json.dumps(r.get("config", {}), indent=1, sort_keys=True)


def _document(results: dict[str, dict], rows: list[dict], generated: str) -> list[Block]:
    quick = _is_quick(results)
    secs = section_counts(results)
    doc = [
        Block("h1", "pclandscape: claims report" + (" (QUICK run: shrunk sizes, see the deviations per experiment)" if quick else "")),
        Block("p", f"Generated {generated}."),
        Block("bullets", items=tuple(_count_line(k, v) for k, v in secs.items())),
        Block("p", _LEGEND),
        Block("h2", "Summary"),
        Block("table", items=(
            ("experiment", "mode", "paper claims passed", "findings (own verdicts)", "wall time (s)", "data used"),
            [(Cell(row["name"], link=row["name"]), "quick" if row["quick"] else "full",
              Cell(row["paper"], css="PASS" if row["all_paper_pass"] else "FAIL"), row["findings"], f"{row['wall']:.1f}",
              row["data"]) for row in rows])),
        Block("h2", "Protocols (BP vs PC training)"),
        Block("p", PROTOCOL_NOTE),
    ]
    for key, sec in secs.items():
        doc.append(Block("h2", SECTIONS.get(key, key)))
        if not sec["claims"]:
            text = _not_run(key)
            doc.append(Block("p", text[:1].upper() + text[1:] + "."))
            continue
        doc += [Block("table", items=(("experiment", "id", "kind", "verdict"),
                                       [(Cell(name, link=name), c["id"], c.get("category", "paper"), Cell(verdict(c), verdict=True))
                                        for name, c in sec["claims"]]))]
    for name, r in results.items():
        doc.append(Block("h2", f"{name}{' (quick)' if r.get('quick') else ''}: {r.get('description', '')}", anchor=name))
        if _changes_text(r):
            doc.append(Block("note", _changes_text(r)))
        doc.append(Block("p", f"Wall time {r.get('wall_time_s', float('nan')):.1f} s on {r.get('device', '?')}; seeds "
                               f"{r.get('seeds', [])}; config hash `{r.get('config_hash', '?')}`."))
        if r.get("data"):
            doc.append(Block("note", "Data: " + "; ".join(r["data"])))
        doc += [Block("quote", note) for note in r.get("notes", [])]
        for t in r.get("tables", []):
            doc += [Block("title", t["title"]), Block("table", items=(tuple(t["columns"]), [tuple(row) for row in t["rows"]]))]
        doc += [Block("image", f"{name}/{fig}") for fig in r.get("figures", [])]
        doc.append(Block("table", items=(("id", "kind", "statement", "expected", "measured", "verdict"),
                                          [(c["id"], c.get("category", "paper"), c["statement"], c["expected"], c["measured"],
                                            Cell(verdict(c), verdict=True)) for c in r.get("claims", [])])))
        doc.append(Block("details", _config_text(r), items=("config",)))
    return doc


_LEGEND = (
    "Verdicts: PASS / FAIL for the paper's claims; YES / NO for findings (results beyond the paper: whether "
    "the expectation written before the run held, reported as measured and never tuned); SUPPORTED / NOT "
    "SUPPORTED / INCONCLUSIVE for the paper's claim decided under the fair comparison (rule stated with it); "
    "SKIPPED where a claim could not be measured or decided here (e.g. censored runs bounding the wrong way). "
    "Each claim sits in one of four parts: the theory (exact identities), the paper's figures under the paper's "
    "own training code (where PC's step is 320x BP's), the paper's claims under the fair comparison, and findings "
    "beyond the paper (deep residual PCNs)."
)


def write_report(out_dir, results: dict[str, dict] | None = None) -> tuple[Path, Path]:
    """Write ``out_dir/report.md`` and ``out_dir/report.html`` (atomically); return their paths.

    ``results`` is what :func:`collect` returns for ``out_dir`` (read when not given).
    """
    results = collect(Path(out_dir)) if results is None else results
    rows = summary_rows(results)
    generated = datetime.datetime.now().isoformat(timespec="seconds")
    return write_document(_document(results, rows, generated), out_dir, "report", "pclandscape claims report")
