"""The :class:`Dataset` container and the data set names."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


__all__ = ["NAMES", "Dataset", "one_hot"]


NAMES = ("toy", "mnist", "fashion_mnist", "cifar10", "mnist1d", "matrix_completion")


@dataclass
class Dataset:
    """Train and test arrays of a data set (float32, targets one-hot for classification).

    Attributes:
        name: data set name (``"mnist"``, ...).
        x_train: training inputs.
        y_train: training targets (may hold NaN for unobserved entries).
        x_test: test inputs.
        y_test: test targets (may hold NaN).
        source: where it came from (a folder, "generated", "downloaded to ...").
        note: how it deviates from what was asked (fallbacks, subsets), or "".
        extras: anything else (e.g. the full target matrix of matrix completion).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str = ""
    note: str = ""
    extras: dict = field(default_factory=dict)

    @property
    def input_dim(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def output_dim(self) -> int:
        return int(self.y_train.shape[1])

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> "Dataset":
        """The first ``n_train`` / ``n_test`` samples (already shuffled files keep their order)."""
        return Dataset(
            self.name,
            self.x_train[:n_train],
            self.y_train[:n_train],
            self.x_test[:n_test],
            self.y_test[:n_test],
            self.source,
            self.note,
            self.extras,
        )


def one_hot(labels: np.ndarray, n: int = 10) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[labels.astype(np.int64)]
