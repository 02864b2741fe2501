"""Experiments run side by side in worker processes (``pclandscape reproduce --jobs N``).

The quick experiments spend most of their time compiling small XLA programs or running small
ones, which uses about one core at a time. Each worker is a fresh (``spawn``) Python process
that takes the next experiment from a queue, runs it with
:func:`pclandscape.experiments.runner.run_experiment` (which writes ``out/NAME/`` as a whole)
and reports back; the parent reads the results from ``out/NAME/results.json``.

Each worker is bound to its own share of the CPUs the parent may use (``os.sched_setaffinity``:
worker ``i`` of ``n`` gets every ``n``-th one, from the ``i``-th; on a machine with fewer CPUs
than workers they share; ``PCLANDSCAPE_BIND_WORKERS=0`` leaves them unbound). Unbound, each process's XLA thread pools spread over every core,
and on a 2-core CPU the quick ``fair`` experiment took 261 s beside ``mupc`` against 118 s
bound to one core beside it (``mupc``: 246 s and 233 s).

Interrupts: a worker turns SIGINT and SIGTERM into ``KeyboardInterrupt`` as the console entry
does (an experiment's temporary folder is removed, its resume folder kept) and leaves with
status 130 through ``os._exit`` (JAX's teardown after interrupted work can crash). When the
parent is interrupted, or a worker fails, the other workers are terminated the same way.
A worker that dies (a crash in native code, the OOM killer) is reported with the experiment
it was running, instead of waiting for it forever.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence

__all__ = ["run_in_workers"]

_POLL_S = 0.5
_GRACE_S = 30.0


def _interrupted(signum, frame) -> None:
    """The worker's SIGINT / SIGTERM handler: the console entry's, after which further signals
    are ignored, so that a Ctrl-C followed by the parent's SIGTERM cannot cut the cleanup of
    the interrupted experiment short (its temporary folder was left behind)."""
    from .._interrupt import handler

    signal.signal(signal.SIGINT, _ignore)  # a Python no-op: SIG_IGN would raise "ignored due to race condition"
    signal.signal(signal.SIGTERM, _ignore)
    handler(signum, frame)


def _ignore(signum, frame) -> None:
    pass


def _serve(tasks, events, out: str, quick: bool) -> None:
    """Run experiments from ``tasks`` until a ``None``; put ``(kind, name, text)`` on ``events``."""
    from ..errors import INPUT_ERRORS, first_line
    from . import runner

    while (item := tasks.get()) is not None:
        name, cfg = item
        events.put(("start", name, str(os.getpid())))
        try:
            runner.run_experiment(name, cfg, out, quick=quick, progress=False)
            events.put(("done", name, ""))
        except INPUT_ERRORS as e:
            events.put(("error", name, first_line(e)))
        except Exception:  # noqa: BLE001 - reported to the parent, which raises it
            events.put(("crash", name, traceback.format_exc()))


def _cpu_shares(n: int) -> list[set[int]] | None:
    """The CPUs of each of ``n`` workers: every ``n``-th of those this process may use, from the
    ``i``-th (one each, shared round robin, when there are fewer than ``n``); ``None`` (workers
    not bound) where the platform cannot bind processes (not Linux) or
    ``PCLANDSCAPE_BIND_WORKERS=0``."""
    if not hasattr(os, "sched_getaffinity") or os.environ.get("PCLANDSCAPE_BIND_WORKERS", "") == "0":
        return None
    cpus = sorted(os.sched_getaffinity(0))
    return [set(cpus[i::n]) or {cpus[i % len(cpus)]} for i in range(n)]


def _worker(tasks, events, out: str, quick: bool, cpus: set[int] | None = None) -> None:
    """A worker process's main: bound to ``cpus`` (before JAX starts its thread pools),
    :func:`_serve`, then ``os._exit`` (130 after an interrupt)."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    signal.signal(signal.SIGINT, _interrupted)
    signal.signal(signal.SIGTERM, _interrupted)
    code = 0
    try:
        _serve(tasks, events, out, quick)
    except KeyboardInterrupt:
        code = 130
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        events.close()
        events.join_thread()  # the queued events reach the parent before the process ends
    os._exit(code)


class WorkerError(RuntimeError):
    """A worker process failed outside the experiment's own error handling (a crash)."""


def run_in_workers(jobs: Sequence[tuple[str, object]], out: str, *, quick: bool,
                   workers: int) -> Iterator[tuple[str, str, str]]:
    """Run ``jobs`` (``(name, config)`` pairs) in ``workers`` processes, yielding events.

    Yields ``("start", name, pid)`` when a worker (process id ``pid``) takes an experiment, ``("done", name, "")``
    when its results are in ``out/name/``, and ``("error", name, message)`` for an error the
    experiment raised on bad input (a missing data set, a bad config value, a diverging
    inference: the one-line message). Raises :class:`WorkerError` when an experiment raised
    anything else (with its traceback) or a worker process died; the other workers are then
    terminated, as they are when the caller stops iterating (an interrupt).
    """
    for name, cfg in jobs:  # an unpicklable config would be dropped by the queue's thread, unseen
        try:
            pickle.dumps(cfg)
        except Exception as e:  # noqa: BLE001 - any pickling failure
            raise ValueError(f"{name}: its config cannot be sent to a worker process ({e}); run it with --jobs 1.") from None
    ctx = multiprocessing.get_context("spawn")
    tasks, events = ctx.Queue(), ctx.Queue()
    n = max(1, min(int(workers), len(jobs)))
    for job in jobs:
        tasks.put(job)
    for _ in range(n):
        tasks.put(None)
    shares = _cpu_shares(n) or [None] * n
    procs = [ctx.Process(target=_worker, args=(tasks, events, out, quick, shares[i]), name=f"pclandscape-worker-{i}")
             for i in range(n)]
    for p in procs:
        p.start()
    running: dict[str, str] = {}  # worker pid -> the experiment it runs
    left = len(jobs)
    finished = False
    try:
        while left:
            try:
                kind, name, text = events.get(timeout=_POLL_S)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    what = running.get(str(dead[0].pid), "no experiment")
                    raise WorkerError(f"a worker process died (exit code {dead[0].exitcode}) while running {what}; "
                                      f"rerun to resume.") from None
                if not any(p.is_alive() for p in procs):  # all gone, events lost: should not happen
                    raise WorkerError("the worker processes ended before reporting every experiment.")
                continue
            if kind == "start":
                running[text] = name
            else:
                running = {pid: n for pid, n in running.items() if n != name}
                left -= 1
            if kind == "crash":
                raise WorkerError(f"{name} failed in its worker process:\n{text}")
            yield kind, name, text
        finished = True
    finally:
        _stop(procs, finished)
        for q in (tasks, events):
            q.cancel_join_thread()  # items no worker will read must not block the exit
            q.close()
        # Unlink the queues' semaphores now: the console entry leaves an interrupted run through
        # os._exit, which skips their finalizers (multiprocessing's tracker then warns of leaks).
        del tasks, events
        gc.collect()


def _stop(procs, finished: bool) -> None:
    """Let finished workers exit (``finished``), else SIGTERM them (their interrupt path);
    kill any still alive after a grace period."""
    for p in procs:
        if finished:
            p.join(_GRACE_S)
        elif p.is_alive():
            p.terminate()
    for p in procs:
        p.join(_GRACE_S)
        if p.is_alive():
            p.kill()
            p.join()
