"""A dependency-free progress bar for long loops (training steps, seeds, experiments).

Kept instead of ``tqdm`` on measurement (``benchmarks/progress.py``, 2-core CPU): 2.5 us per
update against tqdm's 4.7 us; in a log (not a terminal) it writes one line per tenth of
the work (and at least one a minute while work advances) where tqdm writes one line of
carriage-return redraws; and every update is the point where an interrupt swallowed by
Python is raised again (:mod:`pclandscape._interrupt`).

A long sub-task draws into its caller's bar: ``share = bar.share(1)`` hands one unit of the
caller's work to a function with a ``progress=`` argument (``pcl.train``, ``pcl.train_many``),
which advances the caller's bar step by step (:func:`progress_bar`); ``share.finish()`` then
adds what the sub-task left (it stopped early, or resumed from a checkpoint).
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

    On a terminal the bar redraws in place; elsewhere (logs, CI) it prints a line at each
    further 10 % of the work, and after ``log_every`` seconds without one while the work
    advances (an hour-long unit of work still shows that it moves). ``n`` may advance by
    fractions of a unit (:meth:`share`).
    """

    def __init__(self, total: int, desc: str = "", enabled: bool | None = None, interval: float = 0.2,
                 log_every: float = 60.0):
        self.total = max(int(total), 1)
        self.desc = desc
        self.enabled = progress_enabled(enabled)
        self.interval = interval
        self.log_every = log_every
        self.n = 0
        self.start = time.perf_counter()
        self._last = 0.0
        self._last_decile = -1
        self._tty = sys.stderr.isatty()
        self.postfix = ""

    def update(self, n: float = 1, **postfix) -> None:
        raise_if_requested()
        self.n = round(self.n + n, 9)  # shares add fractions: 1/3 + 1/3 + 1/3 counts as 1
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
            if decile != self._last_decile or (n > 0 and now - self._last >= self.log_every):
                self._last_decile = decile
                self._last = now
                self._draw(end="\n")

    def share(self, units: float = 1) -> "Share":
        """``units`` of this bar's work handed to a sub-task: pass the share as the sub-task's
        ``progress=`` (it then advances this bar in proportion to its own steps) and call
        :meth:`Share.finish` when it returns."""
        return Share(self, units)

    def _draw(self, end: str) -> None:
        frac = min(self.n / self.total, 1.0)
        elapsed = time.perf_counter() - self.start
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        bar = "#" * int(24 * frac) + "-" * (24 - int(24 * frac))
        line = (
            f"{self.desc} [{bar}] {_count(self.n)}/{self.total} {elapsed:6.1f}s"
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


class Share:
    """``units`` of a :class:`Progress` bar's work, handed to a sub-task (:meth:`Progress.share`).

    The sub-task's own bar (:func:`progress_bar`) advances the parent by ``units * done / total``
    as it goes, the parent's line showing the sub-task's postfix (e.g. its loss); :meth:`finish`
    adds the rest, so the parent counts exactly ``units`` however the sub-task ended.
    """

    def __init__(self, parent: Progress, units: float):
        self.parent = parent
        self.units = float(units)
        self.sent = 0.0

    def advance(self, fraction: float, **postfix) -> None:
        """Move the parent to ``fraction`` (in [0, 1]) of this share."""
        target = round(self.units * min(max(fraction, 0.0), 1.0), 9)  # the parent's resolution
        if target > self.sent or postfix:
            self.parent.update(max(target - self.sent, 0.0), **postfix)
            self.sent = max(target, self.sent)

    def finish(self) -> None:
        """Count the whole share in the parent (what the sub-task did not report)."""
        self.advance(1.0)


class _SubBar:
    """A sub-task's bar of ``total`` steps drawn into its caller's (a :class:`Share`)."""

    def __init__(self, share: Share, total: int):
        self.share = share
        self.total = max(int(total), 1)
        self.n = 0

    def update(self, n: float = 1, **postfix) -> None:
        self.n += n
        self.share.advance(self.n / self.total, **postfix)

    def close(self) -> None:
        pass


def progress_bar(progress: bool | None | Share, total: int, desc: str = "") -> Progress | _SubBar:
    """The bar of a function with a ``progress=`` argument and ``total`` steps: its own
    (``progress`` True, False or None: see :func:`progress_enabled`), or a share of its
    caller's bar (``progress`` a :class:`Share`)."""
    if isinstance(progress, Share):
        return _SubBar(progress, total)
    return Progress(total, desc=desc, enabled=progress)


def _count(n: float) -> str:
    return str(int(n)) if float(n).is_integer() else f"{n:.1f}"


def _fmt(v) -> str:
    try:
        return f"{float(v):.4g}"
    except (TypeError, ValueError):
        return str(v)
