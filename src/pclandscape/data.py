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

import gzip
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "Dataset",
    "DataNotFoundError",
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
]

NAMES = ("toy", "mnist", "fashion_mnist", "cifar10", "mnist1d", "matrix_completion")


class DataNotFoundError(FileNotFoundError):
    """A data set's files are not on this machine and could not be downloaded."""


@dataclass
class Dataset:
    """Train and test arrays of a data set (float32, targets one-hot for classification).

    Attributes:
        name: data set name (``"mnist"``, ...).
        x_train, y_train, x_test, y_test: arrays; ``y`` may hold NaN for unobserved entries.
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


# --------------------------------------------------------------------------- files

_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/")
# SHA-256 of the .gz files as distributed.
_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
_FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
# Fashion-MNIST publishes only MD5s of its archives, and re-packaged copies (Debian's) are
# re-compressed: these are SHA-256 sums of the *uncompressed* IDX files, which every copy shares.
_FASHION_SHA256_RAW = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
_CIFAR_URLS = (
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/cifar-10-python.tar.gz",
)
_CIFAR_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
_DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")

_SUBDIRS = {
    "mnist": ("", "mnist", "MNIST/raw", "MNIST"),
    "fashion_mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST", "fashion"),
    "cifar10": ("", "cifar10", "cifar-10", "CIFAR10"),
}


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for data files, in order."""
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    if os.environ.get("PCLANDSCAPE_DATA"):
        dirs.append(Path(os.environ["PCLANDSCAPE_DATA"]))
    dirs += [Path.home() / ".cache" / "pclandscape", Path.home() / "data", Path.cwd() / "data"]
    return dirs


def _candidates(name: str, data_dir) -> list[Path]:
    out = []
    for d in search_dirs(data_dir):
        out += [d / s if s else d for s in _SUBDIRS[name]]
    if name == "fashion_mnist":
        out.append(_DEBIAN_FASHION)
    return out


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a NumPy array of its stored type and shape."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number).")
    types = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in types:
        raise ValueError(f"{path}: unknown IDX element type 0x{data[2]:02x}.")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=types[data[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but the file holds {arr.size} values.")
    return arr.reshape(shape)


def _find_idx(folder: Path) -> list[Path] | None:
    found = []
    for base in _IDX:
        for cand in (folder / f"{base}.gz", folder / base):
            if cand.is_file():
                found.append(cand)
                break
        else:
            return None
    return found


def _sha256(path: Path, raw: bool = False) -> str:
    h = hashlib.sha256()
    opener = gzip.open if raw else open
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_NETWORK_FAILED = False


def _download_enabled(download: bool | None) -> bool:
    if download is not None:
        return download
    return os.environ.get("PCLANDSCAPE_DOWNLOAD", "1") != "0" and not _NETWORK_FAILED


def _fetch(urls, dest: Path, check) -> bool:
    """Download the first URL that works into ``dest`` (atomically) if ``check(tmp)`` passes."""
    global _NETWORK_FAILED
    dest.parent.mkdir(parents=True, exist_ok=True)
    for url in urls:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".part")
        os.close(fd)
        try:
            with urllib.request.urlopen(url, timeout=15) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f)
            if not check(Path(tmp)):
                continue  # corrupted or changed upstream: try the next mirror
            os.replace(tmp, dest)
            return True
        except OSError:
            continue
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    _NETWORK_FAILED = True
    return False


def _download_dir(data_dir) -> Path:
    for d in search_dirs(data_dir)[:2] + [Path.home() / ".cache" / "pclandscape"]:
        try:
            d.mkdir(parents=True, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            continue
    return Path.home() / ".cache" / "pclandscape"


def _missing(name: str, data_dir, files: list[str]) -> DataNotFoundError:
    first = search_dirs(data_dir)[0]
    searched = [str(p) for p in _candidates(name, data_dir)]
    err = DataNotFoundError(
        f"{name} not found: place {', '.join(files)} in {first} (or pass --data-dir DIR / set "
        f"PCLANDSCAPE_DATA; searched: {', '.join(searched[:4])}{' ...' if len(searched) > 4 else ''}); "
        f"downloading was {'not possible (no network)' if _NETWORK_FAILED else 'switched off'}."
    )
    err.searched = searched
    return err


def _load_idx_set(name: str, data_dir, download, mirrors, checksum) -> tuple[tuple[np.ndarray, ...], str]:
    for folder in _candidates(name, data_dir):
        files = _find_idx(folder)
        if files:
            return tuple(read_idx(f) for f in files), str(folder)
    if _download_enabled(download):
        dest = _download_dir(data_dir) / _SUBDIRS[name][1]
        ok = all(
            (dest / f"{b}.gz").is_file() or _fetch([m + f"{b}.gz" for m in mirrors], dest / f"{b}.gz", checksum(f"{b}.gz"))
            for b in _IDX
        )
        if ok:
            return tuple(read_idx(dest / f"{b}.gz") for b in _IDX), f"downloaded to {dest}"
    raise _missing(name, data_dir, ["{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz"])


def _one_hot(labels: np.ndarray, n: int = 10) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[labels.astype(np.int64)]


def _images(name, arrays, mean, std, flatten, source) -> Dataset:
    xtr, ytr, xte, yte = arrays
    norm = lambda a: ((a.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
    xtr, xte = norm(xtr), norm(xte)
    if flatten:
        xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    return Dataset(name, xtr, _one_hot(ytr), xte, _one_hot(yte), source)


def mnist(data_dir=None, *, flatten: bool = True, download: bool | None = None) -> Dataset:
    """MNIST, normalised ``(x - 0.1307) / 0.3081``; inputs ``(N, 784)`` (or ``(N, 1, 28, 28)``)."""
    check = lambda fname: (lambda p: _sha256(p) == _MNIST_SHA256[fname])
    arrays, src = _load_idx_set("mnist", data_dir, download, _MNIST_MIRRORS, check)
    if not flatten:
        arrays = (arrays[0][:, None], arrays[1], arrays[2][:, None], arrays[3])
    return _images("mnist", arrays, 0.1307, 0.3081, flatten, src)


def fashion_mnist(data_dir=None, *, flatten: bool = True, download: bool | None = None) -> Dataset:
    """Fashion-MNIST, normalised ``(x - 0.5) / 0.5``; inputs ``(N, 784)`` (or ``(N, 1, 28, 28)``)."""
    check = lambda fname: (lambda p: _sha256(p, raw=True) == _FASHION_SHA256_RAW[fname])
    arrays, src = _load_idx_set("fashion_mnist", data_dir, download, _FASHION_MIRRORS, check)
    if not flatten:
        arrays = (arrays[0][:, None], arrays[1], arrays[2][:, None], arrays[3])
    return _images("fashion_mnist", arrays, 0.5, 0.5, flatten, src)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    data = d[b"data"] if b"data" in d else d["data"]
    labels = d[b"labels"] if b"labels" in d else d["labels"]
    return np.asarray(data, np.uint8).reshape(-1, 3, 32, 32), np.asarray(labels)


def cifar10(data_dir=None, *, flatten: bool = False, download: bool | None = None) -> Dataset:
    """CIFAR-10, per-channel normalised; inputs ``(N, 3, 32, 32)`` (or flattened)."""
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    folder = None
    for cand in _candidates("cifar10", data_dir):
        for sub in (cand / "cifar-10-batches-py", cand):
            if all((sub / n).is_file() for n in names):
                folder = sub
                break
        if folder is None and (cand / "cifar-10-python.tar.gz").is_file():
            _extract(cand / "cifar-10-python.tar.gz", cand)
            folder = cand / "cifar-10-batches-py"
        if folder:
            break
    source = str(folder) if folder else ""
    if folder is None and _download_enabled(download):
        dest = _download_dir(data_dir) / "cifar10"
        tar = dest / "cifar-10-python.tar.gz"
        if tar.is_file() or _fetch(_CIFAR_URLS, tar, lambda p: _sha256(p) == _CIFAR_SHA256):
            _extract(tar, dest)
            folder, source = dest / "cifar-10-batches-py", f"downloaded to {dest}"
    if folder is None:
        raise _missing("cifar10", data_dir, ["cifar-10-batches-py/{data_batch_1..5,test_batch} (or cifar-10-python.tar.gz)"])
    train = [_read_cifar_batch(folder / n) for n in names[:5]]
    xte, yte = _read_cifar_batch(folder / "test_batch")
    xtr, ytr = np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])
    mean = np.array([0.4914, 0.4822, 0.4465], np.float32)[None, :, None, None]
    std = np.array([0.247, 0.243, 0.261], np.float32)[None, :, None, None]
    ds = _images("cifar10", (xtr, ytr, xte, yte), mean, std, False, source)
    if flatten:
        ds.x_train, ds.x_test = ds.x_train.reshape(len(xtr), -1), ds.x_test.reshape(len(xte), -1)
    return ds


def _extract(tar: Path, dest: Path) -> None:
    with tarfile.open(tar) as t:
        members = [m for m in t.getmembers() if m.name.startswith("cifar-10-batches-py/") and ".." not in m.name]
        t.extractall(dest, members=members)


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
            cache.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache.parent, suffix=".npz")
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **{k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")})
            os.replace(tmp, cache)
        except OSError:
            pass
    return Dataset(
        "mnist1d",
        np.asarray(d["x"], np.float32),
        _one_hot(np.asarray(d["y"])),
        np.asarray(d["x_test"], np.float32),
        _one_hot(np.asarray(d["y_test"])),
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


_LOADERS = {"mnist": mnist, "fashion_mnist": fashion_mnist, "cifar10": cifar10}


def as_images(ds: Dataset, shape=(3, 32, 32)) -> Dataset:
    """28x28 grey images as ``(N, 3, 32, 32)``: zero-padded by 2 and repeated over channels
    (the CIFAR-10 fallback of the CNN experiments)."""
    def conv(x):
        x = x.reshape(len(x), 1, 28, 28)
        x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
        return np.repeat(x, shape[0], axis=1).astype(np.float32)

    return Dataset(ds.name, conv(ds.x_train), ds.y_train, conv(ds.x_test), ds.y_test, ds.source, ds.note, ds.extras)


def load(name: str, data_dir=None, *, fallback: tuple[str, ...] = (), download: bool | None = None, **kwargs) -> Dataset:
    """Load a data set by name, trying ``fallback`` names in turn when it is not available.

    ``name`` is one of :data:`NAMES`. When a fallback is used, ``Dataset.note`` says so.
    The environment variable ``PCLANDSCAPE_NO_FALLBACK=1`` switches fallbacks off.
    Raises :class:`DataNotFoundError` (listing the files to place) when none is available.
    """
    if os.environ.get("PCLANDSCAPE_NO_FALLBACK", "") == "1":  # set by the CLI's --no-fallback
        fallback = ()
    errors = []
    for i, n in enumerate((name, *fallback)):
        if n not in NAMES:
            raise ValueError(f"unknown data set {n!r}; known: {', '.join(NAMES)}.")
        try:
            if n in _LOADERS:
                ds = _LOADERS[n](data_dir, download=download, **{k: v for k, v in kwargs.items() if k == "flatten"})
            elif n == "mnist1d":
                ds = mnist1d(**{k: v for k, v in kwargs.items() if k in ("seed", "num_samples")})
            elif n == "toy":
                ds = toy_gaussian(**{k: v for k, v in kwargs.items() if k in ("seed", "n_train", "n_test", "dim", "variant")})
            else:
                ds = matrix_completion(**{k: v for k, v in kwargs.items() if k in ("seed", "n", "rank", "masked")})
        except DataNotFoundError as e:
            errors.append(e)
            continue
        if i > 0:
            ds.note = f"{name} is not available on this machine; used {n} instead. {ds.note}".strip()
        return ds
    if len(errors) == 1:
        raise errors[0]
    raise DataNotFoundError("none of " + ", ".join((name, *fallback)) + " is available:\n" + "\n".join(str(e) for e in errors))
