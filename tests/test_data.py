"""Data loaders: tiny files in the real formats (IDX .gz, CIFAR-10 pickles) read through the real
loaders; generated tasks checked against their definitions. Nothing downloads."""

import gzip
import pickle
import struct

import numpy as np
import pytest

import pclandscape as pcl
from pclandscape import data as D


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real data set is visible: HOME, cwd and PCLANDSCAPE_DATA point into tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PCLANDSCAPE_DATA", raising=False)
    monkeypatch.setenv("PCLANDSCAPE_DOWNLOAD", "0")
    monkeypatch.setenv("PCLANDSCAPE_VERIFY_DATA", "0")  # tiny stand-ins: no published sums (tested below)
    monkeypatch.setitem(D.SYSTEM_DIRS, "fashion_mnist", [tmp_path / "no-debian-package"])
    return tmp_path


def _write_idx(path, arr: np.ndarray, compress=True):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    payload = header + arr.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _write_mnist_like(folder, n_train=6, n_test=4, seed=0, compress=True):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, arr in arrays.items():
        _write_idx(folder / name, arr, compress)
    return arrays


def test_read_idx_round_trip_and_bad_magic(tmp_path):
    arr = np.arange(24).reshape(2, 3, 4)
    _write_idx(tmp_path / "a", arr)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="not an IDX file"):
        D.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + b"\x01\x02")
    with pytest.raises(ValueError, match="header says shape"):
        D.read_idx(tmp_path / "short")


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_loader_normalises_flattens_and_one_hots(isolated, compress):
    arrays = _write_mnist_like(isolated / "dd", compress=compress)
    ds = pcl.data.mnist(isolated / "dd", download=False)
    assert ds.x_train.shape == (6, 784) and ds.x_test.shape == (4, 784) and ds.x_train.dtype == np.float32
    expect = (arrays["train-images-idx3-ubyte"].reshape(6, -1) / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(ds.x_train, expect, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ds.y_train.argmax(1), arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.y_train.sum(1), np.ones(6))
    img = pcl.data.mnist(isolated / "dd", download=False, flatten=False)
    assert img.x_train.shape == (6, 1, 28, 28)


def test_fashion_mnist_found_in_its_subfolder_and_via_env(isolated, monkeypatch):
    arrays = _write_mnist_like(isolated / "store" / "fashion-mnist", seed=1)
    monkeypatch.setenv("PCLANDSCAPE_DATA", str(isolated / "store"))
    ds = pcl.data.fashion_mnist(download=False)
    np.testing.assert_allclose(ds.x_test, (arrays["t10k-images-idx3-ubyte"].reshape(4, -1) / 255.0 - 0.5) / 0.5, atol=1e-6)
    assert ds.source.endswith("fashion-mnist")


def test_cifar10_loader_reads_pickled_batches(isolated):
    rng = np.random.default_rng(2)
    folder = isolated / "dd" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, 3))
        batches[name] = (x, labels)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": x, b"labels": labels}, f)
    ds = pcl.data.cifar10(isolated / "dd", download=False)
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    raw = batches["data_batch_2"][0].reshape(3, 3, 32, 32) / 255.0
    mean = np.array([0.4914, 0.4822, 0.4465])[None, :, None, None]
    std = np.array([0.247, 0.243, 0.261])[None, :, None, None]
    np.testing.assert_allclose(ds.x_train[3:6], (raw - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(ds.y_test.argmax(1), batches["test_batch"][1])
    assert pcl.data.cifar10(isolated / "dd", download=False, flatten=True).x_train.shape == (15, 3072)


def test_missing_data_lists_the_files_and_where(isolated):
    with pytest.raises(pcl.data.DataNotFoundError) as e:
        pcl.data.mnist(isolated / "nowhere", download=False)
    msg = str(e.value)
    assert "train,t10k" in msg and str(isolated / "nowhere") in msg and "\n" not in msg
    with pytest.raises(pcl.data.DataNotFoundError, match="cifar-10-batches-py"):
        pcl.data.cifar10(isolated / "nowhere", download=False)


def test_fallback_is_recorded_and_can_be_switched_off(isolated):
    """A fallback is named in the data set's note and in the results; an experiment config with
    ``data_fallback=False`` (the CLI's --no-fallback) turns a missing data set into the error."""
    from types import SimpleNamespace

    from pclandscape.experiments.base import Results, load_data

    ds = pcl.data.load("mnist", isolated / "nowhere", fallback=("toy",), download=False, seed=3, n_train=5, n_test=2)
    assert ds.name == "toy" and "mnist is not available" in ds.note
    res = Results("t", None)
    on = SimpleNamespace(data_dir=str(isolated / "nowhere"), data_fallback=True)
    assert load_data(res, "mnist", on, fallback=("toy",), seed=3, n_train=5, n_test=2).name == "toy"
    assert res.data and "mnist is not available" in res.data[0]
    with pytest.raises(pcl.data.DataNotFoundError, match="mnist not found"):
        load_data(res, "mnist", SimpleNamespace(**{**vars(on), "data_fallback": False}), fallback=("toy",))
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        pcl.data.load("imagenet")


def test_an_option_no_loader_takes_is_refused_not_ignored(isolated):
    """``load``'s keyword options go to the loaders that take them (a fallback's ``seed`` rides
    along with the first choice); one that none of the sets tried takes (``split`` here, a
    misspelt option) is refused before any file is looked for, instead of silently ignored."""
    with pytest.raises(ValueError, match=r"got the option\(s\) 'split'.*fashion_mnist takes flatten; mnist1d takes "
                                         r"seed, num_samples\)\. The test split comes with every data set"):
        pcl.data.load("fashion_mnist", isolated / "nowhere", fallback=("mnist1d",), split="test")
    with pytest.raises(ValueError, match=r"'n_trian'.*toy takes seed, n_train"):
        pcl.data.load("toy", n_trian=5)
    ds = pcl.data.load("fashion_mnist", isolated / "nowhere", fallback=("toy",), download=False, seed=1, n_train=7,
                       n_test=3, flatten=True)
    assert (ds.name, ds.x_train.shape[0], ds.x_test.shape[0]) == ("toy", 7, 3)


def test_toy_gaussian_matches_its_definition():
    ds = pcl.data.toy_gaussian(0, n_train=20000, n_test=10, dim=2)
    np.testing.assert_array_equal(ds.y_train, -ds.x_train)
    # mean 1, variance 0.1: standard errors sqrt(0.1/2e4) ~ 2e-3 and 0.1*sqrt(2/2e4) ~ 1e-3
    np.testing.assert_allclose(ds.x_train.mean(0), 1.0, atol=1e-2)
    np.testing.assert_allclose(ds.x_train.var(0), 0.1, atol=5e-3)
    v = pcl.data.toy_gaussian(0, n_train=8, n_test=2, dim=2, variant="y2=x2")
    np.testing.assert_array_equal(v.y_train[:, 0], -v.x_train[:, 0])
    np.testing.assert_array_equal(v.y_train[:, 1], v.x_train[:, 1])
    with pytest.raises(ValueError, match="variant"):
        pcl.data.toy_gaussian(variant="y=x")


def test_matrix_completion_is_rank_3_with_20_percent_hidden_fixed_by_seed():
    ds = pcl.data.matrix_completion(seed=4)
    m, obs = ds.extras["M"], ds.extras["observed"]
    assert m.shape == (10, 10) and np.linalg.matrix_rank(m.astype(np.float64), tol=1e-4) == 3
    assert (~obs).sum() == 20
    np.testing.assert_array_equal(ds.x_train, np.eye(10))
    # row j of the targets is column j of M, NaN where hidden; test targets hold the rest
    np.testing.assert_array_equal(np.isnan(ds.y_train), ~obs.T)
    np.testing.assert_array_equal(np.where(obs.T, ds.y_train, ds.y_test), m.T)
    again = pcl.data.matrix_completion(seed=4)
    np.testing.assert_array_equal(again.extras["observed"], obs)
    assert not np.array_equal(pcl.data.matrix_completion(seed=5).extras["observed"], obs)


def test_mnist1d_is_generated_without_download(isolated):
    ds = pcl.data.mnist1d(seed=1, num_samples=200)
    assert ds.x_train.shape == (160, 40) and ds.x_test.shape == (40, 40)
    np.testing.assert_array_equal(ds.y_train.sum(1), np.ones(160))


# --------------------------------------------------------------------------- hostile and broken files


class _Marker:
    """A pickle that, loaded by the full unpickler, creates a file (it calls ``open``)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _cifar_folder(root, rng, n=3, protocol=None):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": b"x", b"data": x, b"labels": list(rng.integers(0, 10, n)),
                         b"filenames": [b"a.png"] * n}, f, protocol=protocol)
    return folder


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_batches_of_every_protocol_load_with_the_restricted_unpickler(isolated, protocol):
    _cifar_folder(isolated / "dd", np.random.default_rng(0), protocol=protocol)
    assert pcl.data.cifar10(isolated / "dd", download=False).x_train.shape == (15, 3, 32, 32)


def test_hostile_cifar_pickle_runs_no_code(isolated, monkeypatch):
    """Issue case 1: a pickle whose __reduce__ calls open() in ./data is refused unopened,
    through the search path a user does not choose (./data of the current directory)."""
    folder = _cifar_folder(isolated / "data", np.random.default_rng(0))
    marker = isolated / "owned.txt"
    with open(folder / "data_batch_3", "wb") as f:
        pickle.dump({b"data": _Marker(marker), b"labels": [0]}, f)
    with pytest.raises(pcl.data.DataError, match=r"data_batch_3 is not a CIFAR-10 python batch \(UnpicklingError: global io.open"):
        pcl.data.cifar10(download=False)
    assert not marker.exists()
    # and with verification on (the default) the file is refused by its checksum before unpickling
    monkeypatch.setenv("PCLANDSCAPE_VERIFY_DATA", "1")
    with pytest.raises(pcl.data.DataError, match="data_batch_1 is not the published file .md5"):
        pcl.data.cifar10(download=False)
    assert not marker.exists()


def test_garbage_and_truncated_cifar_pickles_name_the_file(isolated):
    """Issue case 10 (CIFAR): garbage bytes, a truncated pickle, a pickle of the wrong shape."""
    folder = _cifar_folder(isolated / "dd", np.random.default_rng(0))
    (folder / "data_batch_2").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(pcl.data.DataError, match="data_batch_2 is not a CIFAR-10 python batch"):
        pcl.data.cifar10(isolated / "dd", download=False)
    blob = (folder / "data_batch_1").read_bytes()
    (folder / "data_batch_2").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(pcl.data.DataError, match="data_batch_2 is not a CIFAR-10 python batch .*EOFError|UnpicklingError"):
        pcl.data.cifar10(isolated / "dd", download=False)
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, f)
    with pytest.raises(pcl.data.DataError, match=r"data_batch_2: 'data' must be a uint8 array \(N, 3072\)"):
        pcl.data.cifar10(isolated / "dd", download=False)
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump({b"data": np.zeros((3, 3072), np.uint8), b"labels": [0, 1, 12]}, f)
    with pytest.raises(pcl.data.DataError, match=r"labels must lie in 0..9, found 0..12"):
        pcl.data.cifar10(isolated / "dd", download=False)


def _tar_with(path, members):
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as t:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                t.addfile(info, io.BytesIO(payload))
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                t.addfile(info)
            else:
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = payload
                t.addfile(info)


@pytest.mark.parametrize("bad", ["symlink", "hardlink", "dotdot", "absolute"])
def test_archive_with_links_or_escaping_members_is_refused_whole(isolated, bad):
    """Issue case 2: a symlink member pointing outside, then a file written through it."""
    outside = isolated / "outside"
    outside.mkdir()
    root = isolated / "dd"
    root.mkdir()
    members = [("cifar-10-batches-py", "dir", b""), ("cifar-10-batches-py/readme", "file", b"ok")]
    if bad == "symlink":
        members += [("cifar-10-batches-py/esc", "symlink", str(outside)), ("cifar-10-batches-py/esc/owned.txt", "file", b"x")]
    elif bad == "hardlink":
        members += [("cifar-10-batches-py/esc", "hardlink", "/etc/passwd")]
    elif bad == "dotdot":
        members += [("cifar-10-batches-py/../../outside/owned.txt", "file", b"x")]
    else:
        members += [(str(outside / "owned.txt"), "file", b"x")]
    _tar_with(root / "cifar-10-python.tar.gz", members)
    with pytest.raises(pcl.data.DataError, match="the archive is refused"):
        pcl.data.cifar10(root, download=False)
    assert not (outside / "owned.txt").exists() and not (root / "cifar-10-batches-py").exists()


def test_archive_of_regular_files_extracts_and_loads(isolated):
    import io

    rng = np.random.default_rng(4)
    members = [("cifar-10-batches-py", "dir", b"")]
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        buf = io.BytesIO()
        pickle.dump({b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"labels": [1, 2]}, buf)
        members.append((f"cifar-10-batches-py/{name}", "file", buf.getvalue()))
    _tar_with(isolated / "dd" / "cifar-10-python.tar.gz" if (isolated / "dd").mkdir() is None else None, members)
    ds = pcl.data.cifar10(isolated / "dd", download=False)
    assert ds.x_train.shape == (10, 3, 32, 32) and (isolated / "dd" / "cifar-10-batches-py" / "test_batch").is_file()


def test_idx_content_is_validated(isolated):
    """Issue case 6: 10x10 images are not MNIST; labels out of range; count mismatch."""
    folder = isolated / "dd"
    folder.mkdir()
    _write_mnist_like(folder)
    _write_idx(folder / "train-images-idx3-ubyte", np.zeros((6, 10, 10), np.uint8))
    with pytest.raises(pcl.data.DataError, match=r"images must be uint8 of shape \(N, 28, 28\), found uint8 \(6, 10, 10\)"):
        pcl.data.mnist(folder, download=False)
    _write_mnist_like(folder)
    _write_idx(folder / "t10k-labels-idx1-ubyte", np.array([0, 1, 2, 10]))
    with pytest.raises(pcl.data.DataError, match="t10k-images.*labels must lie in 0..9, found 0..10"):
        pcl.data.mnist(folder, download=False)
    _write_mnist_like(folder)
    _write_idx(folder / "train-labels-idx1-ubyte", np.array([0, 1, 2]))
    with pytest.raises(pcl.data.DataError, match="6 images but labels of shape \\(3,\\)"):
        pcl.data.mnist(folder, download=False)


def test_local_files_are_checked_against_the_published_sums(isolated, monkeypatch):
    """Verification on (the default): a valid IDX set that is not MNIST is refused by checksum,
    and verify=False (or PCLANDSCAPE_VERIFY_DATA=0) lets a user's own copy through with a note."""
    monkeypatch.setenv("PCLANDSCAPE_VERIFY_DATA", "1")
    folder = isolated / "dd"
    folder.mkdir()
    _write_mnist_like(folder)
    with pytest.raises(pcl.data.DataError, match=r"train-images-idx3-ubyte.gz is not the published file .sha256.*verify=False"):
        pcl.data.mnist(folder, download=False)
    _write_mnist_like(folder / "fashion-mnist" if (folder / "fashion-mnist").mkdir() is None else None)
    with pytest.raises(pcl.data.DataError, match=r"fashion-mnist/train-images-idx3-ubyte.gz is not the published file"):
        pcl.data.fashion_mnist(folder, download=False)
    ds = pcl.data.mnist(folder, download=False, verify=False)
    assert "not verified" in ds.note and ds.x_train.shape == (6, 784)
    # uncompressed MNIST has no published sum: content (with the published counts) is checked
    raw = isolated / "raw"
    raw.mkdir()
    _write_mnist_like(raw, compress=False)
    with pytest.raises(pcl.data.DataError, match="mnist has 60000 samples here, found 6"):
        pcl.data.mnist(raw, download=False)


@pytest.mark.parametrize("damage", ["truncated_gzip", "not_gzip", "short_header", "short_body"])
def test_corrupt_idx_files_name_the_file(isolated, damage):
    """Issue case 10 (IDX): BadGzipFile / EOFError / truncated bodies become one DataError."""
    folder = isolated / "dd"
    folder.mkdir()
    _write_mnist_like(folder)
    target = folder / "train-images-idx3-ubyte.gz"
    blob = target.read_bytes()
    if damage == "truncated_gzip":
        target.write_bytes(blob[: len(blob) // 2])
    elif damage == "not_gzip":
        target.write_bytes(b"this is not gzip at all")
    elif damage == "short_header":
        with gzip.open(target, "wb") as f:
            f.write(bytes([0, 0, 8, 3, 0, 0]))
    else:
        with gzip.open(target, "wb") as f:
            f.write(bytes([0, 0, 8, 3]) + struct.pack(">III", 6, 28, 28) + b"\x00" * 100)
    with pytest.raises(pcl.data.DataError, match="train-images-idx3-ubyte.gz"):
        pcl.data.mnist(folder, download=False)


@pytest.mark.parametrize("where", ["body", "headers"])
def test_download_has_an_overall_deadline_and_leaves_no_part_file(isolated, monkeypatch, where):
    """Issue case 16: a server trickling one byte every 0.2 s -- in the body, or in the status
    line and headers (as a proxy answering CONNECT can), where each read gets its byte within
    the socket timeout -- is cut at the deadline (1 s here), the .part file is removed, and a
    stale .part of a killed run is cleaned up."""
    import http.server
    import threading
    import time

    from pclandscape.data._files import fetch

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
            payload = head + b"x" * 1000 if where == "headers" else b"x" * 1000
            if where == "body":
                self.wfile.write(head)
            try:
                for byte in payload:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("PCLANDSCAPE_DOWNLOAD_DEADLINE", "1")
        dest = isolated / "dl" / "file.gz"
        dest.parent.mkdir()
        (dest.parent / ".file.gz.stale.part").write_bytes(b"left by a killed run")
        t0 = time.monotonic()
        ok = fetch([f"http://127.0.0.1:{server.server_port}/file.gz"], dest, lambda p: True)
        elapsed = time.monotonic() - t0
    finally:
        server.shutdown()
    assert not ok and 1 <= elapsed < 3 and not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_a_failed_download_is_not_retried_for_the_fallbacks(isolated, monkeypatch):
    """No network (every mirror answers 404): MNIST's download fails after one request per
    mirror for its first file, the error says so, and the Fashion-MNIST fallback of the same
    call does not wait on the network."""
    import http.server
    import threading

    requests = []

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_error(404)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setitem(D.MIRRORS, "mnist", (f"{base}/a/", f"{base}/b/"))
    monkeypatch.setitem(D.MIRRORS, "fashion_mnist", (f"{base}/fashion/",))
    try:
        with pytest.raises(pcl.data.DataNotFoundError, match=r"downloading failed \(http://\S+/a/train-images-idx3-ubyte.gz: Not Found; "
                                                              r"http://\S+/b/train-images-idx3-ubyte.gz: Not Found\)") as e:
            pcl.data.load("mnist", isolated / "nowhere", fallback=("fashion_mnist",), download=True)
    finally:
        server.shutdown()
    assert requests == ["/a/train-images-idx3-ubyte.gz", "/b/train-images-idx3-ubyte.gz"]
    assert "fashion_mnist not found" in str(e.value) and "switched off" in str(e.value)
