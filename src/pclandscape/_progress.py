"""A dependency-free progress bar for long loops (training steps, seeds, experiments).

Kept instead of ``tqdm`` on measurement (``benchmarks/progress.py``, 2-core CPU): 2.5 us per
update against tqdm's 4.7 us; in a log (not a terminal) it writes one line per tenth of
the work where tqdm writes one line of carriage-return redraws; and every update is the
point where an interrupt swallowed by Python is raised again (:mod:`pclandscape._interrupt`).
"""

from __future__ import annotations

import os
import sys
import time

from ._interrupt import raise_if_requested


def progress_enabled(progress: bool | None) -> bool:
    """Resolve ``progress=None`` by ``PCLANDSCAPE_PROGRESS``: ``1`` on (a log then gets a line per
    tenth of the work), ``0`` off, unset: on when stderr is a terminal."""
    if progress is not None:
        return bool(progress)
    env = os.environ.get("PCLANDSCAPE_PROGRESS", "")
    if env in ("0", "1"):
        return env == "1"
    return sys.stderr.isatty()


class Progress:
    """Progress of ``total`` units of work, drawn on stderr at most every ``interval`` seconds.

    On a terminal the bar redraws in place; elsewhere (logs, CI) it prints a line at most
    every 10 % of the work.
    """

    def __init__(self, total: int, desc: str = "", enabled: bool | None = None, interval: float = 0.2):
        self.total = max(int(total), 1)
        self.desc = desc
        self.enabled = progress_enabled(enabled)
        self.interval = interval
        self.n = 0
        self.start = time.perf_counter()
        self._last = 0.0
        self._last_decile = -1
        self._tty = sys.stderr.isatty()
        self.postfix = ""

    def update(self, n: int = 1, **postfix) -> None:
        raise_if_requested()
        self.n += n
        if postfix:
            self.postfix = " ".join(f"{k}={_fmt(v)}" for k, v in postfix.items())
        if not self.enabled:
            return
        now = time.perf_counter()
        if self._tty:
            if now - self._last >= self.interval or self.n >= self.total:
                self._last = now
                self._draw(end="")
        else:
            decile = int(10 * self.n / self.total)
            if decile != self._last_decile:
                self._last_decile = decile
                self._draw(end="\n")

    def _draw(self, end: str) -> None:
        frac = min(self.n / self.total, 1.0)
        elapsed = time.perf_counter() - self.start
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
        line = (
            f"{self.desc} [{bar}] {self.n}/{self.total} {elapsed:6.1f}s"
            f" eta {eta:6.1f}s {self.postfix}"
        )
        prefix = "\r" if self._tty else ""
        sys.stderr.write(prefix + line[:200] + end)
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self._tty:
            self._draw(end="\n")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _fmt(v) -> str:
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return str(v)
