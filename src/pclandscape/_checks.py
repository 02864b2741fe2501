"""Argument checks shared by the constructors and entry points: each raises one
``ValueError`` naming the owner, the argument and the value, before any work is done."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["positive_number", "nonnegative_number", "positive_int", "nonnegative_int", "is_array"]


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
