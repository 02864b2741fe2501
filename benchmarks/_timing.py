"""Timing helpers shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time

import jax


def block(tree):
    return jax.block_until_ready(tree)


def median_ms(fn, *args, repeats: int = 20, warmup: int = 2) -> float:
    """Median wall time of ``fn(*args)`` in milliseconds, after ``warmup`` calls (compilation)."""
    for _ in range(warmup):
        block(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        block(fn(*args))
        times.append(1e3 * (time.perf_counter() - t))
    return statistics.median(times)


def interleaved_median_ms(fns: dict, repeats: int = 20, warmup: int = 2) -> dict:
    """Median ms of several zero-argument callables, timed round-robin so load affects all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            block(fn())
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            block(fn())
            times[k].append(1e3 * (time.perf_counter() - t))
    return {k: statistics.median(v) for k, v in times.items()}


def matmul_rate(repeats: int = 5, n: int = 2048) -> float:
    """GFLOP/s of an ``n x n`` float32 matmul (median of ``max(repeats, 5)``): the machine's
    practical peak, quoted beside the rates of the steps measured in the same run."""

    a = jax.random.normal(jax.random.key(3), (n, n))
    mm = jax.jit(lambda a, b: a @ b)
    ms = interleaved_median_ms({"mm": lambda: mm(a, a)}, repeats=max(repeats, 5))["mm"]
    return 2 * n**3 / (ms * 1e-3) / 1e9


def device_name() -> str:
    d = jax.devices()[0]
    return f"{d.platform}:{getattr(d, 'device_kind', '')}"
