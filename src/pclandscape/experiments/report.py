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
from .runner import EXPERIMENTS, _atomic_write

__all__ = ["collect", "summary_rows", "write_report", "verdict"]


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
                found[name] = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not valid JSON ({e}); delete it and rerun 'pclandscape run {name}'.") from None
    if not found:
        raise FileNotFoundError(f"no results in {out} (no NAME/results.json); run 'pclandscape reproduce --out {out}' first.")
    return found


def verdict(c: dict) -> str:
    """PASS / FAIL for a paper claim, YES / NO for a finding (did the stated expectation hold?),
    SKIPPED when it could not be measured."""
    if c.get("passed") is None:
        return "SKIPPED"
    if c.get("category", "paper") == "finding":
        return "YES" if c["passed"] else "NO"
    return "PASS" if c["passed"] else "FAIL"


def _count(claims, category) -> tuple[int, int]:
    sel = [c for c in claims if c.get("category", "paper") == category and c.get("passed") is not None]
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


def _paper_totals(rows) -> tuple[int, int]:
    return sum(r["paper_passed"] for r in rows), sum(r["paper_total"] for r in rows)


def _md_cell(s) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _config_text(r: dict) -> str:
    return json.dumps(r.get("config", {}), indent=1, sort_keys=True)


def _markdown(results: dict[str, dict], rows: list[dict], generated: str) -> str:
    lines = ["# pclandscape: claims report", "", f"Generated {generated}.", ""]
    total_p = _paper_totals(rows)
    lines += [f"**Paper claims passed: {total_p[0]}/{total_p[1]}.**", "", _LEGEND, ""]
    lines += ["## Summary", "", "| experiment | paper claims passed | findings (own verdicts) | wall time (s) | data used |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['name']} | {row['paper']} | {row['findings']} | {row['wall']:.1f} | {_md_cell(row['data'])} |")
    lines += ["", "## Protocols (BP vs PC training)", "", PROTOCOL_NOTE, ""]
    for name, r in results.items():
        lines += [f"## {name}: {r.get('description', '')}", ""]
        meta = f"Wall time {r.get('wall_time_s', float('nan')):.1f} s on {r.get('device', '?')}; seeds {r.get('seeds', [])}; config hash `{r.get('config_hash', '?')}`."
        lines += [meta, ""]
        if r.get("data"):
            lines += ["Data: " + "; ".join(r["data"]), ""]
        for note in r.get("notes", []):
            lines += [f"> {note}", ""]
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
    "Verdicts: PASS / FAIL for the paper's claims (what the reproduction must show); YES / NO for "
    "findings (results beyond the paper or under the matched protocol: whether the stated expectation "
    "held, reported as measured and never tuned); SKIPPED where a claim could not be measured here."
)

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top;text-align:left}
th{background:#f2f2f2} .PASS{color:#070;font-weight:bold} .FAIL{color:#b00;font-weight:bold}
.YES{color:#036} .NO{color:#a50}
.SKIPPED{color:#888} img{max-width:100%;border:1px solid #eee;margin:0.5em 0}
pre{background:#f7f7f7;padding:0.5em;overflow-x:auto;font-size:0.8em} .note{background:#fff8e0;padding:0.4em 0.8em}
"""


def _img_tag(path: Path) -> str:
    if not path.is_file():
        return f"<p class='note'>figure {html.escape(path.name)} is missing.</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(path.name)}' src='data:image/png;base64,{data}'>"


def _html(out: Path, results: dict[str, dict], rows: list[dict], generated: str) -> str:
    e = html.escape
    total_p = _paper_totals(rows)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>pclandscape claims report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>pclandscape: claims report</h1>",
        f"<p>Generated {e(generated)}. <b>Paper claims passed: {total_p[0]}/{total_p[1]}.</b></p>",
        f"<p>{e(_LEGEND)}</p>",
        "<h2>Summary</h2><table><tr><th>experiment</th><th>paper claims passed</th><th>findings (own verdicts)</th><th>wall time (s)</th><th>data used</th></tr>",
    ]
    for row in rows:
        cls = "PASS" if row["all_paper_pass"] else "FAIL"
        parts.append(
            f"<tr><td><a href='#{e(row['name'])}'>{e(row['name'])}</a></td><td class='{cls}'>{row['paper']}</td>"
            f"<td>{row['findings']}</td><td>{row['wall']:.1f}</td><td>{e(row['data'])}</td></tr>"
        )
    parts += ["</table>", "<h2>Protocols (BP vs PC training)</h2>", f"<p>{e(PROTOCOL_NOTE)}</p>"]
    for name, r in results.items():
        parts.append(f"<h2 id='{e(name)}'>{e(name)}: {e(r.get('description', ''))}</h2>")
        parts.append(
            f"<p>Wall time {r.get('wall_time_s', float('nan')):.1f} s on {e(str(r.get('device', '?')))}; "
            f"seeds {e(str(r.get('seeds', [])))}; config hash <code>{e(str(r.get('config_hash', '?')))}</code>.</p>"
        )
        if r.get("data"):
            parts.append(f"<p class='note'>Data: {e('; '.join(r['data']))}</p>")
        for note in r.get("notes", []):
            parts.append(f"<p class='note'>{e(note)}</p>")
        for fig in r.get("figures", []):
            parts.append(_img_tag(out / name / fig))
        parts.append("<table><tr><th>id</th><th>kind</th><th>statement</th><th>expected</th><th>measured</th><th>verdict</th></tr>")
        for c in r.get("claims", []):
            v = verdict(c)
            parts.append(
                f"<tr><td>{e(c['id'])}</td><td>{e(c.get('category', 'paper'))}</td><td>{e(c['statement'])}</td>"
                f"<td>{e(c['expected'])}</td><td>{e(c['measured'])}</td><td class='{v}'>{v}</td></tr>"
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
    _atomic_write(md_path, lambda f: f.write(md.encode()))
    _atomic_write(html_path, lambda f: f.write(page.encode()))
    return md_path, html_path
