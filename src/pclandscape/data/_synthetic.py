"""Generated data sets: MNIST-1D, the toy Gaussian of Figs 2-3 and the matrix completion of Fig 6."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import atomic_write
from ..errors import DataNotFoundError
from ._dataset import Dataset, one_hot

__all__ = ["mnist1d", "toy_gaussian", "matrix_completion"]


def mnist1d(seed: int = 42, *, num_samples: int = 5000) -> Dataset:
    """MNIST-1D (Greydanus 2020), generated procedurally by the ``mnist1d`` package (no download).

    40-dimensional signals, 10 classes, 80 % / 20 % train / test split.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:  # pragma: no cover - it is a dependency
        raise DataNotFoundError("MNIST-1D needs the 'mnist1d' package: pip install mnist1d") from e
    cache = Path.home() / ".cache" / "pclandscape" / f"mnist1d_seed{seed}_n{num_samples}.npz"
    d = None
    if cache.is_file():
        try:
            with np.load(cache) as f:
                d = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError):
            d = None
    if d is None:
        args = get_dataset_args()
        args.seed, args.num_samples = seed, num_samples
        state = np.random.get_state()  # make_dataset seeds NumPy's global generator
        try:
            d = make_dataset(args)
        finally:
            np.random.set_state(state)
        try:  # generation takes seconds: keep a copy (atomically written)
            atomic_write(cache, lambda f: np.savez(f, **{k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}))
        except OSError:
            pass
    return Dataset(
        "mnist1d",
        np.asarray(d["x"], np.float32),
        one_hot(np.asarray(d["y"])),
        np.asarray(d["x_test"], np.float32),
        one_hot(np.asarray(d["y_test"])),
        "generated (mnist1d package)",
    )


def toy_gaussian(seed: int = 0, n_train: int = 1024, n_test: int = 256, dim: int = 1, variant: str | None = None) -> Dataset:
    """The toy regression of §A.4: ``x ~ N(1, 0.1)`` (0.1 is the variance), ``y = -x``.

    ``variant="y2=x2"`` flips the second output (``y_2 = x_2``), as in Fig 3's right panel.
    """
    if variant not in (None, "y2=x2"):
        raise ValueError(f"variant={variant!r} must be None or 'y2=x2'.")
    if variant and dim < 2:
        raise ValueError("variant='y2=x2' needs dim >= 2.")
    rng = np.random.default_rng(seed)
    x = (1.0 + np.sqrt(0.1) * rng.standard_normal((n_train + n_test, dim))).astype(np.float32)
    y = -x
    if variant:
        y[:, 1] = x[:, 1]
    return Dataset(f"toy{'' if not variant else '_' + variant}", x[:n_train], y[:n_train], x[n_train:], y[n_train:], "generated")


def matrix_completion(seed: int = 0, n: int = 10, rank: int = 3, masked: float = 0.2) -> Dataset:
    """The matrix-completion task of Fig 6 (after Jacot et al.).

    Target ``M = A B^T`` with ``A, B`` of shape ``(n, rank)``, standard Gaussian; a fraction
    ``masked`` of the entries (fixed by ``seed``) is hidden. As a regression for a linear
    network computing ``W_{L:1}``: input ``e_j`` (one-hot, ``x = I``), target column ``M[:, j]``
    with hidden entries NaN (training) -- the test targets hold only the hidden entries.
    ``extras`` holds ``M`` and the boolean mask of observed entries.
    """
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((n, rank)), rng.standard_normal((n, rank))
    m = (a @ b.T).astype(np.float32)
    observed = np.ones(n * n, bool)
    observed[rng.permutation(n * n)[: int(round(masked * n * n))]] = False
    observed = observed.reshape(n, n)
    y_train = np.where(observed, m, np.nan).T.astype(np.float32)  # row j = column j of M
    y_test = np.where(~observed, m, np.nan).T.astype(np.float32)
    x = np.eye(n, dtype=np.float32)
    return Dataset("matrix_completion", x, y_train, x.copy(), y_test, "generated", extras={"M": m, "observed": observed})
