"""Shared fixtures. Float64 is switched on per test (fixture ``x64``) so it never leaks.

The suite's time is mostly XLA compiling many small programs once each; they run for
microseconds. Two CPU compiler settings cut it (set before JAX is imported, and inherited by
the CLI and Ray tests' subprocesses): the backend's optimisation level 0 (about a fifth), and
XLA's older elemental emitters in place of its new fusion emitters
(``--xla_cpu_use_fusion_emitters=false``; the whole suite 727 -> 415 s on a 2-core CPU).
Every check is a mathematical identity at a stated tolerance, so it holds with either.
"""

import os

for _flag in ("--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false"):
    if _flag.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

# One persistent XLA compilation cache for the whole run, shared by the xdist workers and the
# CLI and Ray subprocesses (they inherit the environment): a program compiled by one test is
# loaded, not recompiled, by the next one that builds the same program. Created by the first
# process to import this file (the controller), removed when it exits.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache = tempfile.mkdtemp(prefix="pclandscape-test-xla-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

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
