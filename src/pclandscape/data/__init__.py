"""Data sets of the paper: toy Gaussian, MNIST, Fashion-MNIST, CIFAR-10, MNIST-1D, matrix completion.

Image data sets are read from their standard files:

* MNIST / Fashion-MNIST: the four IDX files ``train-images-idx3-ubyte.gz``,
  ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``
  (gzipped or not);
* CIFAR-10: the python pickle batches ``cifar-10-batches-py/data_batch_1..5`` and
  ``test_batch`` (or the archive ``cifar-10-python.tar.gz``, extracted on first use).

They are looked for in ``data_dir``, ``$PCLANDSCAPE_DATA``, ``~/.cache/pclandscape``,
``~/data`` and ``./data`` (each also in the usual sub-folders such as ``MNIST/raw``), and for
Fashion-MNIST in ``/usr/share/datasets/fashion-mnist`` where Debian's
``dataset-fashion-mnist`` package installs it. If absent they are downloaded from the usual
public mirrors with SHA-256 checks when the network allows (``download=False`` or
``PCLANDSCAPE_DOWNLOAD=0`` turns that off); otherwise :class:`DataNotFoundError` lists
the exact files to place and where.

Normalisation follows the paper's code: MNIST ``(x - 0.1307) / 0.3081``, Fashion-MNIST
``(x - 0.5) / 0.5``, CIFAR-10 per channel ``(x - (0.4914, 0.4822, 0.4465)) / (0.247, 0.243,
0.261)``, pixels first scaled to ``[0, 1]``. Labels are one-hot; images are flattened for MLPs.
"""

from __future__ import annotations

from ..errors import DataError as DataError, DataNotFoundError as DataNotFoundError
from ._dataset import NAMES as NAMES, Dataset as Dataset
from ._files import read_idx as read_idx, search_dirs as search_dirs
from ._images import MIRRORS as MIRRORS, SYSTEM_DIRS as SYSTEM_DIRS, as_images as as_images, cifar10 as cifar10, fashion_mnist as fashion_mnist, mnist as mnist
from ._synthetic import matrix_completion as matrix_completion, mnist1d as mnist1d, toy_gaussian as toy_gaussian

__all__ = [
    "Dataset",
    "DataNotFoundError",
    "DataError",
    "load",
    "toy_gaussian",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "mnist1d",
    "matrix_completion",
    "read_idx",
    "search_dirs",
    "as_images",
    "NAMES",
    "MIRRORS",
    "SYSTEM_DIRS",
]


_LOADERS = {"mnist": mnist, "fashion_mnist": fashion_mnist, "cifar10": cifar10}
_SYNTHETIC = {"mnist1d": mnist1d, "toy": toy_gaussian, "matrix_completion": matrix_completion}
# The options of each loader that load(**kwargs) passes on (the others go to the fallbacks that take them)
_OPTIONS = {"mnist": ("flatten",), "fashion_mnist": ("flatten",), "cifar10": ("flatten",),
            "mnist1d": ("seed", "num_samples"), "toy": ("seed", "n_train", "n_test", "dim", "variant"),
            "matrix_completion": ("seed", "n", "rank", "masked")}


def load(name: str, data_dir=None, *, fallback: tuple[str, ...] = (), download: bool | None = None,
         verify: bool | None = None, **kwargs) -> Dataset:
    """Load a data set by name, trying ``fallback`` names in turn when it is not available.

    ``name`` is one of :data:`NAMES`. When a fallback is used, ``Dataset.note`` says so.
    Once a download failed (no network), the fallbacks of this call are not downloaded.
    ``verify`` is passed to the image loaders (see :func:`mnist`). ``kwargs`` go to the loaders
    that take them (``flatten`` to the image sets; ``seed``, ``num_samples`` to :func:`mnist1d`;
    ``seed``, ``n_train``, ``n_test``, ``dim``, ``variant`` to :func:`toy_gaussian`; ``seed``,
    ``n``, ``rank``, ``masked`` to :func:`matrix_completion`); one that none of ``name`` and
    ``fallback`` takes is refused with a ``ValueError``.
    Raises :class:`DataNotFoundError` (listing the files to place) when none is available,
    :class:`DataError` when a file found is corrupt or not what its name says.
    """
    names = (name, *fallback)
    for n in names:
        if n not in NAMES:
            raise ValueError(f"unknown data set {n!r}; known: {', '.join(NAMES)}.")
    unknown = sorted(set(kwargs) - {"flatten"}.union(*(_OPTIONS[n] for n in names)))
    if unknown:
        takes = "; ".join(f"{n} takes {', '.join(_OPTIONS[n]) or 'none'}" for n in dict.fromkeys(names))
        hint = (" The test split comes with every data set (Dataset.x_test, Dataset.y_test)."
                if "split" in unknown else "")
        raise ValueError(f"load({name!r}) got the option(s) {', '.join(map(repr, unknown))}, which none of the data "
                         f"sets tried takes ({takes}).{hint}")
    errors = []
    for i, n in enumerate(names):
        options = {k: v for k, v in kwargs.items() if k in _OPTIONS[n]}
        try:
            if n in _LOADERS:
                ds = _LOADERS[n](data_dir, download=download, verify=verify, **options)
            else:
                ds = _SYNTHETIC[n](**options)
        except DataNotFoundError as e:
            errors.append(e)
            if getattr(e, "download_failed", False):
                download = False  # the network is down: do not wait on it for every fallback
            continue
        if i > 0:
            ds.note = f"{name} is not available on this machine; used {n} instead. {ds.note}".strip()
        return ds
    if len(errors) == 1:
        raise errors[0]
    raise DataNotFoundError("none of " + ", ".join((name, *fallback)) + " is available:\n" + "\n".join(str(e) for e in errors))
