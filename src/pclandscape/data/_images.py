"""The image data sets from their standard files: MNIST, Fashion-MNIST (IDX) and CIFAR-10
(python batches), with their mirrors and published checksums."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..errors import DataError, DataNotFoundError
from ._dataset import Dataset, one_hot
from ._files import check_sum, download_dir, download_enabled, extract, fetch, read_idx, search_dirs, sha256, verify_enabled

__all__ = ["mnist", "fashion_mnist", "cifar10", "as_images", "MIRRORS", "SYSTEM_DIRS"]


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


MIRRORS = {"mnist": _MNIST_MIRRORS, "fashion_mnist": _FASHION_MIRRORS, "cifar10": _CIFAR_URLS}
"""Download locations per data set, tried in order (MNIST, Fashion-MNIST: folders holding the
four ``.gz`` files; CIFAR-10: the archive). A mutable mapping: point it at your own mirror."""

SYSTEM_DIRS = {"fashion_mnist": [Path("/usr/share/datasets/fashion-mnist")]}
"""Folders searched after the user's, per data set: where system packages install a copy
(Debian's ``dataset-fashion-mnist``). A mutable mapping: edit it to add or hide one."""


_SUBDIRS = {
    "mnist": ("", "mnist", "MNIST/raw", "MNIST"),
    "fashion_mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST/raw", "FashionMNIST", "fashion"),
    "cifar10": ("", "cifar10", "cifar-10", "CIFAR10"),
}


def _candidates(name: str, data_dir) -> list[Path]:
    out = []
    for d in search_dirs(data_dir):
        out += [d / s if s else d for s in _SUBDIRS[name]]
    out += [Path(d) for d in SYSTEM_DIRS.get(name, ())]
    return out


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


def _missing(name: str, data_dir, files: list[str], download_failed: bool, reasons: list[str] = ()) -> DataNotFoundError:
    """The error for a data set found nowhere; ``download_failed``: a download was tried and
    failed (no network, every mirror refused, or the deadline passed), as opposed to switched
    off; ``reasons``: why each mirror failed (the first two are quoted)."""
    first = search_dirs(data_dir)[0]
    searched = [str(p) for p in _candidates(name, data_dir)]
    err = DataNotFoundError(
        f"{name} not found: place {', '.join(files)} in {first} (or pass --data-dir DIR / set "
        f"PCLANDSCAPE_DATA; searched: {', '.join(searched[:4])}{' ...' if len(searched) > 4 else ''}); "
        + (f"downloading failed ({'; '.join(reasons[:2])}{' ...' if len(reasons) > 2 else ''})." if download_failed and reasons
           else f"downloading was {'not possible (no network)' if download_failed else 'switched off'}.")
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
            if verify_enabled(verify):
                unverified = [f.name for f, b in zip(files, _IDX) if not sums(f"{b}.gz", f)]
                if unverified:
                    note = (f"checksums not verified for {', '.join(unverified)} (no published sum for uncompressed "
                            f"files); content checked")
            else:
                note = "checksums not verified (verify=False); content checked"
            arrays = tuple(read_idx(f) for f in files)
            _validate_idx(name, arrays, files, counts=verify_enabled(verify))
            return arrays, str(folder), note
    reasons: list[str] = []
    if download_enabled(download):
        dest = download_dir(data_dir) / _SUBDIRS[name][1]
        ok = all(
            (dest / f"{b}.gz").is_file()
            or fetch([m + f"{b}.gz" for m in mirrors], dest / f"{b}.gz", checksum(f"{b}.gz"), reasons)
            for b in _IDX
        )
        if ok:
            files = [dest / f"{b}.gz" for b in _IDX]
            if verify_enabled(verify):
                for b, f in zip(_IDX, files):
                    sums(f"{b}.gz", f)
            arrays = tuple(read_idx(f) for f in files)
            _validate_idx(name, arrays, files, counts=True)
            return arrays, f"downloaded to {dest}", ""
    raise _missing(name, data_dir, ["{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz"], download_enabled(download), reasons)


def _validate_idx(name, arrays, files, counts: bool) -> None:
    """Content checks; the sample counts of the published files (60000 + 10000) only when
    verifying (a user's own copy, ``verify=False``, may be a subset)."""
    xtr, ytr, xte, yte = arrays
    _validate_images(name, xtr, ytr, f"{files[0]} / {files[1].name}", shape=(28, 28), n=60000 if counts else None)
    _validate_images(name, xte, yte, f"{files[2]} / {files[3].name}", shape=(28, 28), n=10000 if counts else None)


def _images(name, arrays, mean, std, flatten, source) -> Dataset:
    xtr, ytr, xte, yte = arrays
    norm = lambda a: ((a.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)
    xtr, xte = norm(xtr), norm(xte)
    if flatten:
        xtr, xte = xtr.reshape(len(xtr), -1), xte.reshape(len(xte), -1)
    return Dataset(name, xtr, one_hot(ytr), xte, one_hot(yte), source)


def _mnist_sums(fname: str, path: Path) -> bool:
    if path.suffix == ".gz":
        check_sum(path, _MNIST_SHA256[fname])
        return True
    return False  # no published sum of the uncompressed files


def _fashion_sums(fname: str, path: Path) -> bool:
    check_sum(path, _FASHION_SHA256_RAW[fname], raw=path.suffix == ".gz")
    return True


def mnist(data_dir=None, *, flatten: bool = True, download: bool | None = None, verify: bool | None = None) -> Dataset:
    """MNIST, normalised ``(x - 0.1307) / 0.3081``; inputs ``(N, 784)`` (or ``(N, 1, 28, 28)``).

    ``verify`` (default True; ``PCLANDSCAPE_VERIFY_DATA=0`` switches it off) checks the
    ``.gz`` files against their published SHA-256 sums; the content (28x28 uint8 images,
    60000 + 10000 of them, labels 0..9) is checked always. Raises :class:`DataError` naming
    the file otherwise.
    """
    check = lambda fname: (lambda p: sha256(p) == _MNIST_SHA256[fname])
    return _idx_dataset("mnist", data_dir, download, check, verify, _mnist_sums, 0.1307, 0.3081, flatten)


def fashion_mnist(data_dir=None, *, flatten: bool = True, download: bool | None = None,
                  verify: bool | None = None) -> Dataset:
    """Fashion-MNIST, normalised ``(x - 0.5) / 0.5``; inputs ``(N, 784)`` (or ``(N, 1, 28, 28)``).

    ``verify`` as for :func:`mnist`, against the SHA-256 sums of the uncompressed files
    (which every copy shares, gzipped or not).
    """
    check = lambda fname: (lambda p: sha256(p, raw=True) == _FASHION_SHA256_RAW[fname])
    return _idx_dataset("fashion_mnist", data_dir, download, check, verify, _fashion_sums, 0.5, 0.5, flatten)


def _idx_dataset(name, data_dir, download, check, verify, sums, mean, std, flatten) -> Dataset:
    """An IDX image set (MNIST-like), found or downloaded, checked, normalised ``(x - mean) / std``."""
    arrays, src, note = _load_idx_set(name, data_dir, download, MIRRORS[name], check, verify, sums)
    if not flatten:
        arrays = (arrays[0][:, None], arrays[1], arrays[2][:, None], arrays[3])
    ds = _images(name, arrays, mean, std, flatten, src)
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
            if verify_enabled(verify):
                check_sum(tar, _CIFAR_SHA256)
            extract(tar, cand)
            folder = cand / "cifar-10-batches-py"
        if folder:
            break
    source = str(folder) if folder else ""
    reasons: list[str] = []
    if folder is None and download_enabled(download):
        dest = download_dir(data_dir) / "cifar10"
        tar = dest / "cifar-10-python.tar.gz"
        if tar.is_file() or fetch(MIRRORS["cifar10"], tar, lambda p: sha256(p) == _CIFAR_SHA256, reasons):
            check_sum(tar, _CIFAR_SHA256)
            extract(tar, dest)
            folder, source = dest / "cifar-10-batches-py", f"downloaded to {dest}"
    if folder is None:
        raise _missing("cifar10", data_dir, ["cifar-10-batches-py/{data_batch_1..5,test_batch} (or cifar-10-python.tar.gz)"],
                       download_enabled(download), reasons)
    if verify_enabled(verify):
        for n in names:
            check_sum(folder / n, _CIFAR_MD5[n], kind="md5")
    counts = verify_enabled(verify)
    train = [_read_cifar_batch(folder / n, counts) for n in names[:5]]
    xte, yte = _read_cifar_batch(folder / "test_batch", counts)
    xtr, ytr = np.concatenate([t[0] for t in train]), np.concatenate([t[1] for t in train])
    mean = np.array([0.4914, 0.4822, 0.4465], np.float32)[None, :, None, None]
    std = np.array([0.247, 0.243, 0.261], np.float32)[None, :, None, None]
    ds = _images("cifar10", (xtr, ytr, xte, yte), mean, std, False, source)
    if not verify_enabled(verify):
        ds.note = "checksums not verified (verify=False); content checked"
    if flatten:
        ds.x_train, ds.x_test = ds.x_train.reshape(len(xtr), -1), ds.x_test.reshape(len(xte), -1)
    return ds


def as_images(ds: Dataset, shape=(3, 32, 32)) -> Dataset:
    """28x28 grey images as ``(N, 3, 32, 32)``: zero-padded by 2 and repeated over channels
    (the CIFAR-10 fallback of the CNN experiments)."""
    def conv(x):
        x = x.reshape(len(x), 1, 28, 28)
        x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
        return np.repeat(x, shape[0], axis=1).astype(np.float32)

    return Dataset(ds.name, conv(ds.x_train), ds.y_train, conv(ds.x_test), ds.y_test, ds.source, ds.note, ds.extras)
