"""The claims report of a results folder: ``report.md`` and a self-contained ``report.html``.

The report is built only from what the runs wrote (``DIR/NAME/results.json`` and the PNG
figures beside it), so it can be regenerated at any time with ``pclandscape report DIR``.
It opens with a summary table (experiment, paper claims passed / total, findings, wall time,
data used), then, per experiment, its figures, data notes (which fallback ran when a data set
was absent), config and claims table (statement, expected, measured, verdict).
"""

from __future__ import annotations

import base64
import datetime
import html
import json
from pathlib import Path

from .base import PROTOCOL_NOTE
from .._io import atomic_write
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


def _count_line(key: str, sec: dict) -> str:
    counts = [f"paper claims passed {sec['passed']}/{sec['total']}"] if sec["total"] or not sec["verdicts"] else []
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


def _md_cell(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _config_text(r: dict) -> str:
    return json.dumps(r.get("config", {}), indent=1, sort_keys=True)


def _markdown(results: dict[str, dict], rows: list[dict], generated: str) -> str:
    quick = _is_quick(results)
    lines = [f"# pclandscape: claims report{' (QUICK run: shrunk sizes, see the deviations per experiment)' if quick else ''}",
             "", f"Generated {generated}.", ""]
    secs = section_counts(results)
    lines += [f"- **{_count_line(k, v)}**" for k, v in secs.items()]
    lines += ["", _LEGEND, ""]
    lines += ["## Summary", "", "| experiment | mode | paper claims passed | findings (own verdicts) | wall time (s) | data used |",
              "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['name']} | {'quick' if row['quick'] else 'full'} | {row['paper']} | {row['findings']} | "
                     f"{row['wall']:.1f} | {_md_cell(row['data'])} |")
    lines += ["", "## Protocols (BP vs PC training)", "", PROTOCOL_NOTE, ""]
    for key, sec in secs.items():
        lines += [f"## {SECTIONS.get(key, key)}", "", "| experiment | id | kind | verdict |", "|---|---|---|---|"]
        for name, c in sec["claims"]:
            lines.append(f"| {name} | {_md_cell(c['id'])} | {c.get('category', 'paper')} | **{verdict(c)}** |")
        lines.append("")
    for name, r in results.items():
        lines += [f"## {name}{' (quick)' if r.get('quick') else ''}: {r.get('description', '')}", ""]
        if _changes_text(r):
            lines += [_changes_text(r), ""]
        meta = f"Wall time {r.get('wall_time_s', float('nan')):.1f} s on {r.get('device', '?')}; seeds {r.get('seeds', [])}; config hash `{r.get('config_hash', '?')}`."
        lines += [meta, ""]
        if r.get("data"):
            lines += ["Data: " + "; ".join(r["data"]), ""]
        for note in r.get("notes", []):
            lines += [f"> {note}", ""]
        for t in r.get("tables", []):
            lines += [f"**{t['title']}**", "", "| " + " | ".join(map(_md_cell, t["columns"])) + " |",
                      "|" + "---|" * len(t["columns"])]
            lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in t["rows"]]
            lines.append("")
        for fig in r.get("figures", []):
            lines += [f"![{name} {fig}]({name}/{fig})", ""]
        lines += ["| id | kind | statement | expected | measured | verdict |", "|---|---|---|---|---|---|"]
        for c in r.get("claims", []):
            lines.append(
                f"| {_md_cell(c['id'])} | {c.get('category', 'paper')} | {_md_cell(c['statement'])} | "
                f"{_md_cell(c['expected'])} | {_md_cell(c['measured'])} | **{verdict(c)}** |"
            )
        lines += ["", "<details><summary>config</summary>", "", "```json", _config_text(r), "```", "", "</details>", ""]
    return "\n".join(lines) + "\n"


_LEGEND = (
    "Verdicts: PASS / FAIL for the paper's claims; YES / NO for findings (results beyond the paper: whether "
    "the expectation written before the run held, reported as measured and never tuned); SUPPORTED / NOT "
    "SUPPORTED / INCONCLUSIVE for the paper's claim decided under the fair comparison (rule stated with it); "
    "SKIPPED where a claim could not be measured or decided here (e.g. censored runs bounding the wrong way). "
    "Each claim sits in one of three parts: the theory (exact identities), the paper's figures under the paper's "
    "own training code (where PC's step is 320x BP's), and the paper's claims under the fair comparison."
)

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#f2f2f2} .PASS{color:#070;font-weight:bold} .FAIL{color:#b00;font-weight:bold}
.YES{color:#036} .NO{color:#a50}
.SKIPPED{color:#888} .SUPPORTED{color:#070;font-weight:bold} .NOT_SUPPORTED{color:#b00;font-weight:bold}
.INCONCLUSIVE{color:#a50;font-weight:bold} img{max-width:100%;border:1px solid #eee;margin:0.5em 0}
pre{background:#f7f7f7;padding:0.5em;overflow-x:auto;font-size:0.8em} .note{background:#fff8e0;padding:0.4em 0.8em}
"""


def _img_tag(path: Path) -> str:
    if not path.is_file():
        return f"<p class='note'>figure {html.escape(path.name)} is missing.</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(path.name)}' src='data:image/png;base64,{data}'>"


def _html(out: Path, results: dict[str, dict], rows: list[dict], generated: str) -> str:
    e = html.escape
    quick = _is_quick(results)
    secs = section_counts(results)
    title = "pclandscape: claims report" + (" (QUICK run: shrunk sizes, see the deviations per experiment)" if quick else "")
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>pclandscape claims report</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{e(title)}</h1>",
        f"<p>Generated {e(generated)}.</p><ul>",
        *[f"<li><b>{e(_count_line(k, v))}</b></li>" for k, v in secs.items()],
        "</ul>",
        f"<p>{e(_LEGEND)}</p>",
        "<h2>Summary</h2><table><tr><th>experiment</th><th>mode</th><th>paper claims passed</th><th>findings (own verdicts)</th>"
        "<th>wall time (s)</th><th>data used</th></tr>",
    ]
    for row in rows:
        cls = "PASS" if row["all_paper_pass"] else "FAIL"
        parts.append(
            f"<tr><td><a href='#{e(row['name'])}'>{e(row['name'])}</a></td><td>{'quick' if row['quick'] else 'full'}</td>"
            f"<td class='{cls}'>{row['paper']}</td>"
            f"<td>{row['findings']}</td><td>{row['wall']:.1f}</td><td>{e(row['data'])}</td></tr>"
        )
    parts += ["</table>", "<h2>Protocols (BP vs PC training)</h2>", f"<p>{e(PROTOCOL_NOTE)}</p>"]
    for key, sec in secs.items():
        parts.append(f"<h2>{e(SECTIONS.get(key, key))}</h2><table><tr><th>experiment</th><th>id</th><th>kind</th><th>verdict</th></tr>")
        for name, c in sec["claims"]:
            v = verdict(c)
            parts.append(f"<tr><td><a href='#{e(name)}'>{e(name)}</a></td><td>{e(c['id'])}</td><td>{e(c.get('category', 'paper'))}</td>"
                         f"<td class='{e(v.replace(' ', '_'))}'>{e(v)}</td></tr>")
        parts.append("</table>")
    for name, r in results.items():
        parts.append(f"<h2 id='{e(name)}'>{e(name)}{' (quick)' if r.get('quick') else ''}: {e(r.get('description', ''))}</h2>")
        if _changes_text(r):
            parts.append(f"<p class='note'>{e(_changes_text(r))}</p>")
        parts.append(
            f"<p>Wall time {r.get('wall_time_s', float('nan')):.1f} s on {e(str(r.get('device', '?')))}; "
            f"seeds {e(str(r.get('seeds', [])))}; config hash <code>{e(str(r.get('config_hash', '?')))}</code>.</p>"
        )
        if r.get("data"):
            parts.append(f"<p class='note'>Data: {e('; '.join(r['data']))}</p>")
        for note in r.get("notes", []):
            parts.append(f"<p class='note'>{e(note)}</p>")
        for t in r.get("tables", []):
            parts.append(f"<p><b>{e(t['title'])}</b></p><table><tr>" + "".join(f"<th>{e(str(c))}</th>" for c in t["columns"]) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>" for row in t["rows"]]
            parts.append("</table>")
        for fig in r.get("figures", []):
            parts.append(_img_tag(out / name / fig))
        parts.append("<table><tr><th>id</th><th>kind</th><th>statement</th><th>expected</th><th>measured</th><th>verdict</th></tr>")
        for c in r.get("claims", []):
            v = verdict(c)
            parts.append(
                f"<tr><td>{e(c['id'])}</td><td>{e(c.get('category', 'paper'))}</td><td>{e(c['statement'])}</td>"
                f"<td>{e(c['expected'])}</td><td>{e(c['measured'])}</td><td class='{e(v.replace(' ', '_'))}'>{e(v)}</td></tr>"
            )
        parts.append("</table>")
        parts.append(f"<details><summary>config</summary><pre>{e(_config_text(r))}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out_dir, results: dict[str, dict] | None = None) -> tuple[Path, Path]:
    """Write ``out_dir/report.md`` and ``out_dir/report.html`` (atomically); return their paths.

    ``results`` is what :func:`collect` returns for ``out_dir`` (read when not given).
    """
    out = Path(out_dir)
    results = collect(out) if results is None else results
    rows = summary_rows(results)
    generated = datetime.datetime.now().isoformat(timespec="seconds")
    md = _markdown(results, rows, generated)
    page = _html(out, results, rows, generated)
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write(md_path, lambda f: f.write(md.encode()))
    atomic_write(html_path, lambda f: f.write(page.encode()))
    return md_path, html_path
