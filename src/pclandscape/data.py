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
import time
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._io import atomic_write
from .errors import DataError, DataNotFoundError

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
]

NAMES = ("toy", "mnist", "fashion_mnist", "cifar10", "mnist1d", "matrix_completion")


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
    """Read an IDX file (gzipped or not) into a NumPy array of its stored type and shape.

    Raises :class:`DataError` naming the file when it is truncated, not gzip/IDX, or its
    header disagrees with its size.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path} cannot be read ({type(e).__name__}: {e}): the file is corrupt or truncated; "
                        f"delete it (it is downloaded again where the network allows) or replace it.") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number); replace it with the original file.")
    types = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in types:
        raise DataError(f"{path}: unknown IDX element type 0x{data[2]:02x}; replace it with the original file.")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated (its header is incomplete); replace it with the original file.")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    itemsize = np.dtype(types[data[2]]).itemsize
    body = len(data) - 4 - 4 * ndim
    if body % itemsize or body // itemsize != int(np.prod(shape)):
        raise DataError(f"{path}: header says shape {shape} but the file holds {body // itemsize} values "
                        f"(truncated or corrupt); replace it with the original file.")
    return np.frombuffer(data, dtype=types[data[2]], offset=4 + 4 * ndim).reshape(shape)


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


# MD5 sums of the CIFAR-10 python batches as published with the data set (the only sums
# published per file); the archive itself has a SHA-256 above.
_CIFAR_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}


def _verify_enabled(verify: bool | None) -> bool:
    if verify is not None:
        return bool(verify)
    return os.environ.get("PCLANDSCAPE_VERIFY_DATA", "1") != "0"


def _check_sum(path: Path, expected: str, kind: str = "sha256", raw: bool = False) -> None:
    """Raise :class:`DataError` unless ``path`` has the published checksum ``expected``."""
    if kind == "md5":
        h = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        got = h.hexdigest()
    else:
        try:
            got = _sha256(path, raw=raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path} cannot be read ({type(e).__name__}): the file is corrupt or truncated; delete "
                            f"or replace it.") from None
    if got != expected:
        raise DataError(
            f"{path} is not the published file ({kind} {got[:12]}... != {expected[:12]}...): it is corrupt, truncated "
            f"or another data set. Delete it (it is downloaded again where the network allows) or replace it; if it is "
            f"your own re-packaged copy, pass verify=False or set PCLANDSCAPE_VERIFY_DATA=0 (its content is still "
            f"checked)."
        )


def _validate_images(name: str, images: np.ndarray, labels: np.ndarray, where: str, *, shape: tuple, n: int | None,
                     n_classes: int = 10) -> None:
    """Content checks every loaded image set passes: image shape, dtype, label range, counts."""
    fix = "replace the files with the original ones"
    if images.dtype != np.uint8 or images.shape[1:] != shape:
        raise DataError(f"{where}: {name} images must be uint8 of shape (N, {', '.join(map(str, shape))}), found "
                        f"{images.dtype} {images.shape}: these are not {name} files; {fix}.")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(f"{where}: {len(images)} images but labels of shape {labels.shape}: the image and label files "
                        f"do not belong together; {fix}.")
    if n is not None and len(images) != n:
        raise DataError(f"{where}: {name} has {n} samples here, found {len(images)}; {fix}.")
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"{where}: labels must lie in 0..{n_classes - 1}, found {int(labels.min())}..{int(labels.max())}; "
                        f"{fix}.")


def _download_enabled(download: bool | None) -> bool:
    if download is not None:
        return download
    return os.environ.get("PCLANDSCAPE_DOWNLOAD", "1") != "0"


_DOWNLOAD_DEADLINE_S = 1800.0


def _deadline() -> float:
    try:
        return float(os.environ.get("PCLANDSCAPE_DOWNLOAD_DEADLINE", _DOWNLOAD_DEADLINE_S))
    except ValueError:
        return _DOWNLOAD_DEADLINE_S


def _copy_with_deadline(src, dst, deadline: float) -> None:
    """Copy a response into a file, raising ``TimeoutError`` once ``deadline`` (a
    ``time.monotonic`` instant) passes: a server trickling bytes cannot hold a run forever."""
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("download deadline passed")
        chunk = src.read1(1 << 16) if hasattr(src, "read1") else src.read(1 << 16)  # read1: what has arrived
        if not chunk:
            return
        dst.write(chunk)


def _fetch(urls, dest: Path, check) -> bool:
    """Download the first URL that works into ``dest`` (atomically) if ``check(tmp)`` passes.

    Each file gets an overall deadline (``PCLANDSCAPE_DOWNLOAD_DEADLINE`` seconds, default
    1800) besides the per-read socket timeout; the temporary ``.part`` file is removed on any
    failure or interrupt, and ``.part`` files left by a killed earlier run are removed first.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.*.part"):
        try:
            stale.unlink()
        except OSError:
            pass
    for url in urls:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        os.close(fd)
        try:
            deadline = time.monotonic() + _deadline()
            with urllib.request.urlopen(url, timeout=15) as r, open(tmp, "wb") as f:
                _copy_with_deadline(r, f, deadline)
            if not check(Path(tmp)):
                continue  # corrupted or changed upstream: try the next mirror
            os.replace(tmp, dest)
            return True
        except (OSError, ValueError, DataError):  # TimeoutError and URLError are OSErrors
            continue
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
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


def _missing(name: str, data_dir, files: list[str], download_failed: bool) -> DataNotFoundError:
    """The error for a data set found nowhere; ``download_failed``: a download was tried and
    failed (no network, or every mirror refused), as opposed to switched off."""
    first = search_dirs(data_dir)[0]
    searched = [str(p) for p in _candidates(name, data_dir)]
    err = DataNotFoundError(
        f"{name} not found: place {', '.join(files)} in {first} (or pass --data-dir DIR / set "
        f"PCLANDSCAPE_DATA; searched: {', '.join(searched[:4])}{' ...' if len(searched) > 4 else ''}); "
        f"downloading was {'not possible (no network)' if download_failed else 'switched off'}."
    )
    err.searched = searched
    err.download_failed = download_failed
    return err


def _load_idx_set(name: str, data_dir, download, mirrors, checksum, verify, sums) -> tuple[tuple[np.ndarray, ...], str, str]:
    """The four IDX arrays of ``name``, where from, and a note (unverified copies).

    ``sums(fname, path)`` verifies one local file (raises :class:`DataError`) and returns
    True, or returns False when no published sum covers that form of the file."""
    for folder in _candidates(name, data_dir):
        files = _find_idx(folder)
        if files:
            note = ""
            if _verify_enabled(verify):
                unverified = [f.name for f, b in zip(files, _IDX) if not sums(f"{b}.gz", f)]
                if unverified:
                    note = (f"checksums not verified for {', '.join(unverified)} (no published sum for uncompressed "
                            f"files); content checked")
            else:
                note = "checksums not verified (verify=False); content checked"
            arrays = tuple(read_idx(f) for f in files)
            _validate_idx(name, arrays, files, counts=_verify_enabled(verify))
            return arrays, str(folder), note
    if _download_enabled(download):
        dest = _download_dir(data_dir) / _SUBDIRS[name][1]
        ok = all(
            (dest / f"{b}.gz").is_file() or _fetch([m + f"{b}.gz" for m in mirrors], dest / f"{b}.gz", checksum(f"{b}.gz"))
            for b in _IDX
        )
        if ok:
            files = [dest / f"{b}.gz" for b in _IDX]
            if _verify_enabled(verify):
                for b, f in zip(_IDX, files):
                    sums(f"{b}.gz", f)
            arrays = tuple(read_idx(f) for f in files)
            _validate_idx(name, arrays, files, counts=True)
            return arrays, f"downloaded to {dest}", ""
    raise _missing(name, data_dir, ["{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz"], _download_enabled(download))


def _validate_idx(name, arrays, files, counts: bool) -> None:
    """Content checks; the sample counts of the published files (60000 + 10000) only when
    verifying (a user's own copy, ``verify=False``, may be a subset)."""
    xtr, ytr, xte, yte = arrays
    _validate_images(name, xtr, ytr, f"{files[0]} / {files[1].name}", shape=(28, 28), n=60000 if counts else None)
    _validate_images(name, xte, yte, f"{files[2]} / {files[3].name}", shape=(28, 28), n=10000 if counts else None)


def _one_hot(labels: np.ndarray, n: int = 10) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[labels.astype(np.int64)]


def _images(name, arrays, mean, std, flatten, source) -> Dataset:
    xtr, ytr, xte, yte = arrays
    norm = lambda a: ((a.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
    xtr, xte = norm(xtr), norm(xte)
    if flatten:
        xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    return Dataset(name, xtr, _one_hot(ytr), xte, _one_hot(yte), source)


def _mnist_sums(fname: str, path: Path) -> bool:
    if path.suffix == ".gz":
        _check_sum(path, _MNIST_SHA256[fname])
        return True
    return False  # no published sum of the uncompressed files


def _fashion_sums(fname: str, path: Path) -> bool:
    _check_sum(path, _FASHION_SHA256_RAW[fname], raw=path.suffix == ".gz")
    return True


def mnist(data_dir=None, *, flatten: bool = True, download: bool | None = None, verify: bool | None = None) -> Dataset:
    """MNIST, normalised ``(x - 0.1307) / 0.3081``; inputs ``(N, 784)`` (or ``(N, 1, 28, 28)``).

    ``verify`` (default True; ``PCLANDSCAPE_VERIFY_DATA=0`` switches it off) checks the
    ``.gz`` files against their published SHA-256 sums; the content (28x28 uint8 images,
    60000 + 10000 of them, labels 0..9) is checked always. Raises :class:`DataError` naming
    the file otherwise.
    """
    check = lambda fname: (lambda p: _sha256(p) == _MNIST_SHA256[fname])
    arrays, src, note = _load_idx_set("mnist", data_dir, download, _MNIST_MIRRORS, check, verify, _mnist_sums)
    if not flatten:
        arrays = (arrays[0][:, None], arrays[1], arrays[2][:, None], arrays[3])
    ds = _images("mnist", arrays, 0.1307, 0.3081, flatten, src)
    ds.note = note
    return ds


def fashion_mnist(data_dir=None, *, flatten: bool = True, download: bool | None = None,
                  verify: bool | None = None) -> Dataset:
    """Fashion-MNIST, normalised ``(x - 0.5) / 0.5``; inputs ``(N, 784)`` (or ``(N, 1, 28, 28)``).

    ``verify`` as for :func:`mnist`, against the SHA-256 sums of the uncompressed files
    (which every copy shares, gzipped or not).
    """
    check = lambda fname: (lambda p: _sha256(p, raw=True) == _FASHION_SHA256_RAW[fname])
    arrays, src, note = _load_idx_set("fashion_mnist", data_dir, download, _FASHION_MIRRORS, check, verify, _fashion_sums)
    if not flatten:
        arrays = (arrays[0][:, None], arrays[1], arrays[2][:, None], arrays[3])
    ds = _images("fashion_mnist", arrays, 0.5, 0.5, flatten, src)
    ds.note = note
    return ds


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR-10 python batch and nothing else: the dict of lists, bytes and one
    uint8 NumPy array that the format holds. Any other global (a function a hostile pickle
    would call) raises ``UnpicklingError`` before anything runs."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),  # NumPy integer labels
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # arrays pickled at protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 at protocol 2
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not part of a CIFAR-10 batch")


def _read_cifar_batch(path: Path, counts: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` of one batch file, read with
    :class:`_BatchUnpickler` (no code runs) and checked (``N = 10000`` if ``counts``)."""
    try:
        with open(path, "rb") as f:
            d = _BatchUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError, OSError) as e:
        raise DataError(f"{path} is not a CIFAR-10 python batch ({type(e).__name__}: {e}); it was not loaded. Replace "
                        f"it with the file from cifar-10-python.tar.gz.") from None
    if not isinstance(d, dict):
        raise DataError(f"{path} is not a CIFAR-10 python batch (holds a {type(d).__name__}, not a dict).")
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must be a uint8 array (N, 3072), found "
                        f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}; replace the file.")
    try:
        labels = np.asarray(labels, np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: 'labels' is not a list of integers; replace the file.") from None
    images = data.reshape(-1, 3, 32, 32)
    _validate_images("cifar10", images, labels, str(path), shape=(3, 32, 32), n=10000 if counts else None)
    return images, labels


def cifar10(data_dir=None, *, flatten: bool = False, download: bool | None = None, verify: bool | None = None) -> Dataset:
    """CIFAR-10, per-channel normalised; inputs ``(N, 3, 32, 32)`` (or flattened).

    Batches are read with a restricted unpickler (a hostile pickle runs nothing), checked
    against their published MD5 sums (``verify``, as for :func:`mnist`) and for content
    (10000 uint8 images of 3x32x32 and labels 0..9 per batch); the archive is extracted
    member by member, regular files only, inside its folder.
    """
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    folder = None
    for cand in _candidates("cifar10", data_dir):
        for sub in (cand / "cifar-10-batches-py", cand):
            if all((sub / n).is_file() for n in names):
                folder = sub
                break
        if folder is None and (cand / "cifar-10-python.tar.gz").is_file():
            tar = cand / "cifar-10-python.tar.gz"
            if _verify_enabled(verify):
                _check_sum(tar, _CIFAR_SHA256)
            _extract(tar, cand)
            folder = cand / "cifar-10-batches-py"
        if folder:
            break
    source = str(folder) if folder else ""
    if folder is None and _download_enabled(download):
        dest = _download_dir(data_dir) / "cifar10"
        tar = dest / "cifar-10-python.tar.gz"
        if tar.is_file() or _fetch(_CIFAR_URLS, tar, lambda p: _sha256(p) == _CIFAR_SHA256):
            _check_sum(tar, _CIFAR_SHA256)
            _extract(tar, dest)
            folder, source = dest / "cifar-10-batches-py", f"downloaded to {dest}"
    if folder is None:
        raise _missing("cifar10", data_dir, ["cifar-10-batches-py/{data_batch_1..5,test_batch} (or cifar-10-python.tar.gz)"],
                       _download_enabled(download))
    if _verify_enabled(verify):
        for n in names:
            _check_sum(folder / n, _CIFAR_MD5[n], kind="md5")
    counts = _verify_enabled(verify)
    train = [_read_cifar_batch(folder / n, counts) for n in names[:5]]
    xte, yte = _read_cifar_batch(folder / "test_batch", counts)
    xtr, ytr = np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])
    mean = np.array([0.4914, 0.4822, 0.4465], np.float32)[None, :, None, None]
    std = np.array([0.247, 0.243, 0.261], np.float32)[None, :, None, None]
    ds = _images("cifar10", (xtr, ytr, xte, yte), mean, std, False, source)
    if not _verify_enabled(verify):
        ds.note = "checksums not verified (verify=False); content checked"
    if flatten:
        ds.x_train, ds.x_test = ds.x_train.reshape(len(xtr), -1), ds.x_test.reshape(len(xte), -1)
    return ds


def _extract(tar: Path, dest: Path) -> None:
    """Extract the ``cifar-10-batches-py/`` members of ``tar`` into ``dest``: regular files
    and folders only, each inside ``dest``; a link, device, absolute path or ``..`` member
    makes the whole archive refused (:class:`DataError`) before anything is written."""
    root = dest.resolve()
    try:
        with tarfile.open(tar) as t:
            chosen = []
            for m in t.getmembers():
                target = (root / m.name).resolve()
                inside = target == root or root in target.parents
                if not (m.isfile() or m.isdir()) or os.path.isabs(m.name) or ".." in Path(m.name).parts or not inside:
                    kind = "a link" if (m.issym() or m.islnk()) else "not a regular file or folder" if not (
                        m.isfile() or m.isdir()) else "outside the folder"
                    raise DataError(f"{tar}: member {m.name!r} is {kind}; the archive is refused (nothing extracted). "
                                    f"Replace it with the original cifar-10-python.tar.gz.")
                if m.name.startswith("cifar-10-batches-py/"):
                    chosen.append((m, target))
            for m, target in chosen:
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                atomic_write(target, lambda f, m=m: shutil.copyfileobj(t.extractfile(m), f))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise DataError(f"{tar} cannot be extracted ({type(e).__name__}: {e}): it is corrupt or truncated; delete it "
                        f"or replace it.") from None


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


def load(name: str, data_dir=None, *, fallback: tuple[str, ...] = (), download: bool | None = None,
         verify: bool | None = None, **kwargs) -> Dataset:
    """Load a data set by name, trying ``fallback`` names in turn when it is not available.

    ``name`` is one of :data:`NAMES`. When a fallback is used, ``Dataset.note`` says so.
    Once a download failed (no network), the fallbacks of this call are not downloaded.
    ``verify`` is passed to the image loaders (see :func:`mnist`).
    Raises :class:`DataNotFoundError` (listing the files to place) when none is available,
    :class:`DataError` when a file found is corrupt or not what its name says.
    """
    errors = []
    for i, n in enumerate((name, *fallback)):
        if n not in NAMES:
            raise ValueError(f"unknown data set {n!r}; known: {', '.join(NAMES)}.")
        try:
            if n in _LOADERS:
                ds = _LOADERS[n](data_dir, download=download, verify=verify,
                                 **{k: v for k, v in kwargs.items() if k == "flatten"})
            elif n == "mnist1d":
                ds = mnist1d(**{k: v for k, v in kwargs.items() if k in ("seed", "num_samples")})
            elif n == "toy":
                ds = toy_gaussian(**{k: v for k, v in kwargs.items() if k in ("seed", "n_train", "n_test", "dim", "variant")})
            else:
                ds = matrix_completion(**{k: v for k, v in kwargs.items() if k in ("seed", "n", "rank", "masked")})
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
