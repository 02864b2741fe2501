"""Shared fixtures. Float64 is switched on per test (fixture ``x64``) so it never leaks."""

import numpy as np
import pytest

from pclandscape._compat import enable_x64


@pytest.fixture
def x64():
    """Run the test with 64-bit floats (for the checks of mathematical identities)."""
    with enable_x64(True):
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def random_linear_problem(rng, widths, n=16, scale=1.0):
    """Random weights ``N(0, scale^2/fan_in)`` and data ``N(0, 1)`` as float64 NumPy arrays."""
    ws = [scale * rng.standard_normal((o, i)) / np.sqrt(i) for i, o in zip(widths[:-1], widths[1:])]
    x = rng.standard_normal((n, widths[0]))
    y = rng.standard_normal((n, widths[-1]))
    return ws, x, y
