"""Argument checks shared by the constructors and entry points: each raises one
``ValueError`` naming the owner, the argument and the value, before any work is done."""

from __future__ import annotations

import math
import os

import numpy as np

__all__ = ["positive_number", "nonnegative_number", "positive_int", "nonnegative_int", "is_array", "check_dense_fits"]


def is_array(value) -> bool:
    """A JAX/NumPy array (traced or array-valued settings are checked where they are used)."""
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, (np.integer, np.floating))


def _is_real(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def positive_number(owner: str, name: str, value) -> None:
    """``value`` is a finite real number > 0."""
    if is_array(value):
        return
    if not _is_real(value) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{owner}({name}={value!r}) must be a positive finite number.")


def nonnegative_number(owner: str, name: str, value) -> None:
    """``value`` is a finite real number >= 0."""
    if is_array(value):
        return
    if not _is_real(value) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{owner}({name}={value!r}) must be a finite number >= 0.")


def positive_int(owner: str, name: str, value) -> None:
    """``value`` is an integer >= 1 (not a bool, not a float such as 2.5 or 2.0)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}({name}={value!r}) must be a positive integer.")


def nonnegative_int(owner: str, name: str, value) -> None:
    """``value`` is an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{owner}({name}={value!r}) must be a non-negative integer.")


def _device_memory() -> tuple[int | None, str]:
    """Bytes of memory of JAX's default device (the machine's RAM for the CPU), or None if unknown."""
    import jax

    device = jax.devices()[0]
    if device.platform == "cpu":
        try:
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "machine"
        except (ValueError, OSError, AttributeError):
            return None, "machine"
    stats = device.memory_stats() or {}
    return stats.get("bytes_limit"), f"{device.platform.upper()}"


def check_dense_fits(p: int, dtype, what: str, instead: str) -> None:
    """Refuse a dense ``(p, p)`` matrix that cannot fit in the device's memory, before any work.

    Building one from matrix-vector products holds at least two ``(p, p)`` arrays at once (the
    columns and their symmetrised sum), so the check is ``2 p^2 itemsize <= memory``: it only
    refuses what would certainly fail (with an out-of-memory error from deep inside XLA).
    """
    memory, device = _device_memory()
    need = 2 * p * p * np.dtype(dtype).itemsize
    if memory is None or need <= memory:
        return
    gb = lambda b: f"{b / 1e9:,.1f} GB"  # noqa: E731
    raise MemoryError(
        f"the dense {what} is a {p:,} x {p:,} matrix ({gb(p * p * np.dtype(dtype).itemsize)} in {np.dtype(dtype).name}); "
        f"building it needs at least {gb(need)}, more than this {device}'s {gb(memory)} of memory. {instead}")
