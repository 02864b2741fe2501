"""Shims over differences between the JAX versions this package supports (see pyproject.toml)."""

from __future__ import annotations

try:  # a public context manager in newer JAX
    from jax import enable_x64
except ImportError:  # older JAX: only in jax.experimental
    from jax.experimental import enable_x64

__all__ = ["enable_x64"]
