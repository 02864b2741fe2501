"""Where data files come from: the folders searched, checksums, downloads with deadlines,
safe archive extraction and IDX reading -- the infrastructure, apart from the data sets."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import threading
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from .._io import atomic_write
from ..errors import DataError

__all__ = ["search_dirs", "read_idx", "sha256", "verify_enabled", "check_sum", "download_enabled", "fetch", "download_dir", "extract"]


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for data files, in order."""
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    if os.environ.get("PCLANDSCAPE_DATA"):
        dirs.append(Path(os.environ["PCLANDSCAPE_DATA"]))
    dirs += [Path.home() / ".cache" / "pclandscape", Path.home() / "data", Path.cwd() / "data"]
    return dirs


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


def sha256(path: Path, raw: bool = False) -> str:
    h = hashlib.sha256()
    opener = gzip.open if raw else open
    with opener(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_enabled(verify: bool | None) -> bool:
    if verify is not None:
        return bool(verify)
    return os.environ.get("PCLANDSCAPE_VERIFY_DATA", "1") != "0"


def check_sum(path: Path, expected: str, kind: str = "sha256", raw: bool = False) -> None:
    """Raise :class:`DataError` unless ``path`` has the published checksum ``expected``."""
    if kind == "md5":
        h = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        got = h.hexdigest()
    else:
        try:
            got = sha256(path, raw=raw)
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


def download_enabled(download: bool | None) -> bool:
    if download is not None:
        return download
    return os.environ.get("PCLANDSCAPE_DOWNLOAD", "1") != "0"


_DOWNLOAD_DEADLINE_S = 1800.0


def _deadline() -> float:
    try:
        return float(os.environ.get("PCLANDSCAPE_DOWNLOAD_DEADLINE", _DOWNLOAD_DEADLINE_S))
    except ValueError:
        return _DOWNLOAD_DEADLINE_S


def _download(url: str, file, seconds: float) -> None:
    """Write the response to ``url`` into the open binary ``file`` within ``seconds`` in all,
    or raise ``TimeoutError``.

    The socket timeout bounds each read, but a server or proxy that trickles a byte at a time --
    in the body, the status line and headers, or a proxy's answer to CONNECT -- passes every
    read. So the transfer runs in a daemon thread and the caller waits for it at most
    ``seconds``; a transfer still running then is told to stop at its next chunk and abandoned
    (it closes ``file`` when it ends). Errors of the transfer are raised here.
    """
    stop = threading.Event()
    failure: list[BaseException] = []

    def transfer():
        try:
            with file, urllib.request.urlopen(url, timeout=15) as r:
                while not stop.is_set():
                    chunk = r.read1(1 << 16) if hasattr(r, "read1") else r.read(1 << 16)  # read1: what has arrived
                    if not chunk:
                        return
                    file.write(chunk)
        except BaseException as e:  # handed to the caller
            failure.append(e)

    worker = threading.Thread(target=transfer, name=f"pclandscape download {url}", daemon=True)
    worker.start()
    try:
        worker.join(seconds)
    finally:  # past the deadline or interrupted: a transfer still running ends at its next chunk
        stop.set()
    if worker.is_alive():
        raise TimeoutError(f"not downloaded within the deadline of {seconds:g} s (PCLANDSCAPE_DOWNLOAD_DEADLINE)")
    if failure:
        raise failure[0]


def fetch(urls, dest: Path, check, reasons: list[str] | None = None) -> bool:
    """Download the first URL that works into ``dest`` (atomically) if ``check(tmp)`` passes.

    Each file gets an overall deadline (``PCLANDSCAPE_DOWNLOAD_DEADLINE`` seconds, default
    1800) besides the per-read socket timeout, covering the connection, a proxy's CONNECT,
    the headers and the body; the temporary ``.part`` file is removed on any
    failure or interrupt, and ``.part`` files left by a killed earlier run are removed first.
    Why each mirror failed is appended to ``reasons`` when given (for the caller's error).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.*.part"):
        try:
            stale.unlink()
        except OSError:
            pass
    for url in urls:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        try:
            _download(url, os.fdopen(fd, "wb"), _deadline())
            if not check(Path(tmp)):  # corrupted or changed upstream: try the next mirror
                _note(reasons, url, "the file does not match its published checksum")
                continue
            os.replace(tmp, dest)
            return True
        except (OSError, ValueError, http.client.HTTPException, DataError) as e:  # TimeoutError, URLError: OSErrors
            _note(reasons, url, getattr(e, "reason", None) or f"{type(e).__name__}: {e}")
            continue
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return False


def _note(reasons: list[str] | None, url: str, why) -> None:
    if reasons is not None:
        reasons.append(f"{url}: {why}")


def download_dir(data_dir) -> Path:
    for d in search_dirs(data_dir)[:2] + [Path.home() / ".cache" / "pclandscape"]:
        try:
            d.mkdir(parents=True, exist_ok=True)
            if os.access(d, os.W_OK):
                return d
        except OSError:
            continue
    return Path.home() / ".cache" / "pclandscape"


def extract(tar: Path, dest: Path) -> None:
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
