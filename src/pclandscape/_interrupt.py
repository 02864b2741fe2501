"""An interrupt that cannot be lost.

Python turns SIGINT into ``KeyboardInterrupt`` in whatever Python code runs at that moment.
When that code is a garbage-collection callback or a ``__del__`` (JAX registers one,
``_xla_gc_callback``), the exception is printed as "Exception ignored" and dropped, and the
interrupted run goes on to the end. The console entry installs :func:`handler`, which also
records the request; :func:`raise_if_requested`, called at every progress tick, raises it
again at the next safe point, and the entry exits with 130 whatever happened in between.
Library code used without the console entry never sees a request, so nothing changes there.
"""

from __future__ import annotations

_requested = False


def handler(signum, frame) -> None:
    """Signal handler for SIGINT and SIGTERM: record the request, then raise ``KeyboardInterrupt``."""
    global _requested
    _requested = True
    raise KeyboardInterrupt


def requested() -> bool:
    """Whether an interrupt was requested since the last :func:`reset`."""
    return _requested


def raise_if_requested() -> None:
    """Raise ``KeyboardInterrupt`` if an interrupt was requested (and perhaps swallowed)."""
    if _requested:
        raise KeyboardInterrupt


def reset() -> None:
    """Forget a request (for in-process callers of the CLI that go on afterwards)."""
    global _requested
    _requested = False
