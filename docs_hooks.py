"""MkDocs hook: embed the quick reproduction's report (``reference/quick/``, committed) as
``docs/report.md`` with its figures, so the site shows what ``make demo`` writes."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

ROOT = Path(__file__).parent
SOURCE = ROOT / "reference" / "quick"
DOCS = ROOT / "docs"


def on_pre_build(config, **kwargs):
    target = DOCS / "quick"
    shutil.rmtree(target, ignore_errors=True)
    for png in SOURCE.glob("*/*.png"):
        dest = target / png.relative_to(SOURCE)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, dest)
    text = (SOURCE / "report.md").read_text(encoding="utf-8")
    text = re.sub(r"\]\(([a-z0-9_]+/[^)]+\.png)\)", r"](quick/\1)", text)
    header = ("!!! note \"Where this comes from\"\n    The report that `make demo` (`pclandscape reproduce --quick --jobs 2`) wrote on a "
              "2-core CPU, committed in `reference/quick/`. Quick runs shrink sizes, steps, seeds and data; every other "
              "change is listed in the report as a deviation.\n\n")
    (DOCS / "report.md").write_text(header + text, encoding="utf-8")


_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc):\s*(?=<code)")


def on_page_content(html, **kwargs):
    """Docstrings cite names Sphinx-style (``:func:`infer```); show just the name."""
    return _ROLE.sub("", html)
