"""One document model, two renderings: the reports are lists of :class:`Block` rendered to
Markdown and to a self-contained HTML page (figures inlined), so the two files cannot say
different things. Used by the claims report (:mod:`.report`) and the sweep report
(:mod:`.aggregate`).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

from .._io import atomic_write

__all__ = ["Cell", "Block", "render_markdown", "render_html", "write_document"]


@dataclass(frozen=True)
class Cell:
    """A table cell: its text, a verdict (coloured / bold), or a link to an anchor."""

    text: str
    verdict: bool = False
    link: str | None = None
    css: str | None = None  # HTML class (defaults to the verdict's)


@dataclass(frozen=True)
class Block:
    """One block of a report.

    ``kind`` is ``"h1"``, ``"h2"``, ``"p"``, ``"note"``, ``"quote"``, ``"bullets"`` (``items``:
    strings), ``"table"`` (``items``: ``(columns, rows)``, each cell a :class:`Cell` or a
    string), ``"title"``, ``"image"`` (``text``: a PNG path relative to the report's folder) or
    ``"details"`` (``text`` shown folded under the summary ``items[0]``).
    """

    kind: str
    text: str = ""
    items: tuple = ()
    anchor: str | None = None


def _cell(v) -> Cell:
    return v if isinstance(v, Cell) else Cell(str(v))


def _md_cell(c: Cell) -> str:
    text = str(c.text).replace("|", "\\|").replace("\n", " ")
    return f"**{text}**" if c.verdict else text


def render_markdown(doc: list[Block]) -> str:
    """The document as Markdown (images as relative links)."""
    lines = []
    for b in doc:
        if b.kind == "h1":
            lines += [f"# {b.text}", ""]
        elif b.kind == "h2":
            lines += [f"## {b.text}", ""]
        elif b.kind in ("p", "note"):
            lines += [b.text, ""]
        elif b.kind == "quote":
            lines += [f"> {b.text}", ""]
        elif b.kind == "title":
            lines += [f"**{b.text}**", ""]
        elif b.kind == "bullets":
            lines += [f"- **{item}**" for item in b.items] + [""]
        elif b.kind == "table":
            cols, rows = b.items
            lines += ["| " + " | ".join(_md_cell(_cell(c)) for c in cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(_md_cell(_cell(v)) for v in row) + " |" for row in rows] + [""]
        elif b.kind == "image":
            lines += [f"![{b.text.replace('/', ' ')}]({b.text})", ""]
        elif b.kind == "details":
            lines += [f"<details><summary>{b.items[0]}</summary>", "", "```json", b.text, "```", "", "</details>", ""]
    return "\n".join(lines) + "\n"


def _html_cell(c: Cell, tag: str = "td") -> str:
    e = html.escape
    text = e(str(c.text))
    if c.link:
        text = f"<a href='#{e(c.link)}'>{text}</a>"
    css = c.css or (str(c.text).replace(" ", "_") if c.verdict else None)
    return f"<{tag}{f' class={chr(39)}{e(css)}{chr(39)}' if css else ''}>{text}</{tag}>"


def _inline(text: str) -> str:
    """Escaped text with Markdown's inline code (`x`) as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def render_html(doc: list[Block], out: Path, title: str = "pclandscape report") -> str:
    """The document as one self-contained HTML page; images (relative to ``out``) are inlined."""
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
             f"<style>{_CSS}</style></head><body>"]
    for b in doc:
        if b.kind in ("h1", "h2"):
            anchor = f" id='{e(b.anchor)}'" if b.anchor else ""
            parts.append(f"<{b.kind}{anchor}>{e(b.text)}</{b.kind}>")
        elif b.kind == "p":
            parts.append(f"<p>{_inline(b.text)}</p>")
        elif b.kind in ("note", "quote"):
            parts.append(f"<p class='note'>{_inline(b.text)}</p>")
        elif b.kind == "title":
            parts.append(f"<p><b>{e(b.text)}</b></p>")
        elif b.kind == "bullets":
            parts.append("<ul>" + "".join(f"<li><b>{e(item)}</b></li>" for item in b.items) + "</ul>")
        elif b.kind == "table":
            cols, rows = b.items
            parts.append("<table><tr>" + "".join(_html_cell(_cell(c), "th") for c in cols) + "</tr>")
            parts += ["<tr>" + "".join(_html_cell(_cell(v)) for v in row) + "</tr>" for row in rows]
            parts.append("</table>")
        elif b.kind == "image":
            parts.append(_img_tag(out / b.text))
        elif b.kind == "details":
            parts.append(f"<details><summary>{e(b.items[0])}</summary><pre>{e(b.text)}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_document(doc: list[Block], out_dir, stem: str, title: str) -> tuple[Path, Path]:
    """Write ``out_dir/STEM.md`` and ``out_dir/STEM.html`` (atomically); return their paths."""
    out = Path(out_dir)
    md, page = render_markdown(doc), render_html(doc, out, title)
    md_path, html_path = out / f"{stem}.md", out / f"{stem}.html"
    atomic_write(md_path, lambda f: f.write(md.encode()))
    atomic_write(html_path, lambda f: f.write(page.encode()))
    return md_path, html_path


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
