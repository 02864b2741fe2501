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
    monkeypatch.delenv("PCLANDSCAPE_NO_FALLBACK", raising=False)
    monkeypatch.setenv("PCLANDSCAPE_DOWNLOAD", "0")
    monkeypatch.setattr(D, "_DEBIAN_FASHION", tmp_path / "no-debian-package")
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


def test_fallback_is_recorded_and_can_be_switched_off(isolated, monkeypatch):
    ds = pcl.data.load("mnist", isolated / "nowhere", fallback=("toy",), download=False, seed=3, n_train=5, n_test=2)
    assert ds.name == "toy" and "mnist is not available" in ds.note
    monkeypatch.setenv("PCLANDSCAPE_NO_FALLBACK", "1")
    with pytest.raises(pcl.data.DataNotFoundError):
        pcl.data.load("mnist", isolated / "nowhere", fallback=("toy",), download=False)
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        pcl.data.load("imagenet")


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
