"""``fastconv train --dataset``: Fashion-MNIST by name and any IDX data set, on
small IDX files generated here (never downloaded)."""

import copy
import dataclasses
import functools
import gzip
import hashlib
import http.server
import json
import threading

import numpy as np
import pytest

from fastconv import cli, nn
from fastconv import datasets as ds

N_TRAIN, N_TEST = 96, 40
# 1 epoch on 96 images: a few batches, enough to exercise the whole run
QUICK = ["--epochs", "1", "--batch-size", "32", "--no-download", "--quiet"]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    # never the user's cache, never the network
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(ds.ENV_DATA_DIR, raising=False)
    monkeypatch.setenv(ds.ENV_MIRRORS, "http://127.0.0.1:9/")
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


def idx_bytes(arr):
    """An unsigned-byte IDX file holding ``arr``."""
    arr = np.asarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.tobytes()


def make_idx_dir(directory, *, h=28, w=28, label_max=9, seed=0, compress=True):
    """Four IDX files with MNIST's names; returns (arrays by name, MD5 of each file)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = dict(zip(ds.MNIST_FILES, (
        rng.integers(0, 256, (N_TRAIN, h, w), dtype=np.uint8),
        rng.integers(0, label_max + 1, N_TRAIN, dtype=np.uint8),
        rng.integers(0, 256, (N_TEST, h, w), dtype=np.uint8),
        rng.integers(0, label_max + 1, N_TEST, dtype=np.uint8),
    )))
    md5 = {}
    for name, arr in arrays.items():
        data = gzip.compress(idx_bytes(arr), mtime=0) if compress else idx_bytes(arr)
        (directory / (name + (".gz" if compress else ""))).write_bytes(data)
        md5[name] = hashlib.md5(data).hexdigest()
    return arrays, md5


@pytest.fixture
def fashion_dir(tmp_path):
    return make_idx_dir(tmp_path / "fashion")


@pytest.fixture
def patched_fashion(monkeypatch, fashion_dir):
    """The registry's Fashion-MNIST checksums replaced by those of the generated files."""
    info = ds.IDX_DATASETS["fashion_mnist"]
    monkeypatch.setitem(ds.IDX_DATASETS, "fashion_mnist",
                        dataclasses.replace(info, checksums=fashion_dir[1]))
    return fashion_dir


def run(argv, capsys):
    code = cli.main(["train"] + argv)
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- #
# the library
# --------------------------------------------------------------------------- #


def test_registry_lists_mnist_and_fashion_mnist():
    assert set(ds.IDX_DATASETS) == {"mnist", "fashion_mnist"}
    fashion = ds.IDX_DATASETS["fashion_mnist"]
    assert fashion.files == ds.MNIST_FILES
    assert (fashion.algorithm, fashion.checksum_of) == ("md5", "gzip")
    # Zalando's published table (github.com/zalandoresearch/fashion-mnist README)
    assert fashion.checksums["train-images-idx3-ubyte"] == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
    assert fashion.checksums["t10k-labels-idx1-ubyte"] == "bb300cfdad3c16e7a12a480ee83cd310"
    assert len(fashion.classes) == 10 and fashion.classes[0] == "T-shirt/top"
    assert fashion.classes[9] == "Ankle boot"
    assert ds.IDX_DATASETS["mnist"].checksums is ds.MNIST_SHA256


def test_load_fashion_mnist_checks_md5_of_the_gz_files(tmp_path, fashion_dir, monkeypatch):
    arrays, md5 = fashion_dir
    with pytest.raises(ds.ChecksumError, match=r"train-images-idx3-ubyte\.gz: MD5 of the file"):
        ds.load_fashion_mnist(tmp_path / "fashion", download=False)
    (x_tr, y_tr), (x_te, y_te) = ds.load_fashion_mnist(tmp_path / "fashion", download=False,
                                                       verify=False)
    monkeypatch.setitem(ds.IDX_DATASETS, "fashion_mnist",
                        dataclasses.replace(ds.IDX_DATASETS["fashion_mnist"], checksums=md5))
    (x2, y2), (xt2, yt2) = ds.load_fashion_mnist(tmp_path / "fashion", download=False)
    np.testing.assert_array_equal(x2[:, 0], arrays["train-images-idx3-ubyte"] / np.float32(255))
    np.testing.assert_array_equal(y2, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(yt2, arrays["t10k-labels-idx1-ubyte"])
    np.testing.assert_array_equal(x2, x_tr)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_download_checks_md5_of_the_downloaded_file(tmp_path, fashion_dir, monkeypatch):
    # a local server: "recompressed/" holds the same IDX data gzipped again, which
    # passes every structure check but not the MD5 of the published .gz
    arrays, md5 = fashion_dir
    root = tmp_path / "www"
    for sub in ("recompressed", "published"):
        (root / sub).mkdir(parents=True)
    for name, arr in arrays.items():
        (root / "published" / (name + ".gz")).write_bytes(
            (tmp_path / "fashion" / (name + ".gz")).read_bytes())
        (root / "recompressed" / (name + ".gz")).write_bytes(
            gzip.compress(idx_bytes(arr), compresslevel=1, mtime=1))
    monkeypatch.setitem(ds.IDX_DATASETS, "fashion_mnist",
                        dataclasses.replace(ds.IDX_DATASETS["fashion_mnist"], checksums=md5))
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    try:
        expected = md5[ds.MNIST_FILES[0]]
        with pytest.raises(ValueError, match=rf"MD5 of the file is .* expected {expected}"):
            ds.load_fashion_mnist(tmp_path / "bad", mirrors=[url + "recompressed/"],
                                  progress=False)
        assert not list((tmp_path / "bad").iterdir())  # nothing unverified left behind
        (_, y_tr), _ = ds.load_fashion_mnist(
            tmp_path / "cache", mirrors=[url + "recompressed/", url + "published/"],
            progress=False)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    np.testing.assert_array_equal(y_tr, arrays["train-labels-idx1-ubyte"])
    for name in ds.MNIST_FILES:
        data = (tmp_path / "cache" / (name + ".gz")).read_bytes()
        assert hashlib.md5(data).hexdigest() == md5[name]


def test_md5_needs_the_gz_file(tmp_path, monkeypatch):
    _, md5 = make_idx_dir(tmp_path / "plain", compress=False)
    with pytest.raises(ValueError, match=r"published MD5 covers train-images-idx3-ubyte\.gz"):
        ds.load_idx_dataset(tmp_path / "plain", md5=md5)


def test_default_data_dir_per_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv(ds.ENV_DATA_DIR, str(tmp_path / "mine"))
    assert ds.default_data_dir() == tmp_path / "mine"
    # $FASTCONV_DATA is MNIST's directory; Fashion-MNIST must not read MNIST's files
    assert ds.default_data_dir("fashion_mnist") == tmp_path / "xdg" / "fastconv" / "fashion_mnist"
    with pytest.raises(ValueError, match="default_data_dir: dataset must be one of"):
        ds.default_data_dir("cifar10")


# --------------------------------------------------------------------------- #
# the command line
# --------------------------------------------------------------------------- #


def test_train_on_any_idx_directory(tmp_path, capsys, fashion_dir):
    metrics = tmp_path / "m.json"
    code, out, err = run(["--dataset", "idx", "--data-dir", str(tmp_path / "fashion"),
                          "--epochs", "1", "--batch-size", "32", "--no-download",
                          "--metrics-out", str(metrics)], capsys)
    assert code == 0, err
    assert "checksums NOT verified" in out
    assert "train lenet5 on idx" in out
    assert f"data (idx): {N_TRAIN} train" in out
    assert f"/{N_TEST})" in out
    m = json.loads(metrics.read_text())
    assert m["dataset"] == "idx" and m["train_size"] == N_TRAIN and m["test_size"] == N_TEST


def test_fashion_mnist_refuses_files_that_are_not_the_published_ones(tmp_path, capsys, fashion_dir):
    code, _, err = run(["--dataset", "fashion_mnist", "--data-dir", str(tmp_path / "fashion")]
                       + QUICK, capsys)
    assert code == 1
    assert "train-images-idx3-ubyte.gz" in err and "MD5" in err
    assert "8d4fb7e6c68d591d4c3dfef9ec88bf0d" in err
    assert "--dataset idx" in err
    assert err.count("\n") == 1  # one line, no traceback


def test_fashion_mnist_trains_when_the_checksums_match(tmp_path, capsys, patched_fashion):
    metrics = tmp_path / "m.json"
    code, out, err = run(["--dataset", "fashion_mnist", "--data-dir", str(tmp_path / "fashion"),
                          "--metrics-out", str(metrics)] + QUICK, capsys)
    assert code == 0, err
    m = json.loads(metrics.read_text())
    assert m["dataset"] == "fashion_mnist" and m["test_size"] == N_TEST
    assert m["train_size"] == N_TRAIN


def test_fashion_mnist_missing_files(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(["--dataset", "fashion_mnist", "--data-dir", str(tmp_path / "empty")]
                       + QUICK, capsys)
    assert code == 1
    assert "train-images-idx3-ubyte" in err and "drop --no-download to fetch Fashion-MNIST" in err


def test_fashion_mnist_is_not_downloaded_under_mpiexec(monkeypatch):
    # rank 0's pre-download in distributed.CLISession fetches MNIST only
    assert cli._dataset_download(False, "fashion_mnist") is True
    assert cli._dataset_download(True, "fashion_mnist") is False
    assert cli._dataset_download(False, "idx") is False
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert cli._dataset_download(False, "fashion_mnist") is False
    assert cli._dataset_download(False, "mnist") is True


def test_idx_needs_data_dir(capsys):
    code, _, err = run(["--dataset", "idx"] + QUICK, capsys)
    assert code == 2 and "--dataset idx needs --data-dir" in err


@pytest.mark.parametrize("kwargs, message", [
    ({"h": 32, "w": 32}, "training images are 32x32, the models take 28x28"),
    ({"label_max": 11}, "labels range over 0..11, the models have 10 classes"),
])
def test_idx_set_the_models_cannot_take(tmp_path, capsys, kwargs, message):
    make_idx_dir(tmp_path / "other", **kwargs)
    code, _, err = run(["--dataset", "idx", "--data-dir", str(tmp_path / "other")] + QUICK, capsys)
    assert code == 1
    assert message in err


def test_idx_data_parallel_session(tmp_path, capsys, fashion_dir):
    # fastconv.distributed's CLISession (one process, 2 micro-batches) reads the same files
    code, out, err = run(["--dataset", "idx", "--data-dir", str(tmp_path / "fashion"),
                          "--micro-batches", "2", "--epochs", "1", "--batch-size", "32",
                          "--no-download"], capsys)
    assert code == 0, err
    assert "data-parallel" in out and f"data (idx): {N_TRAIN} train" in out


# --------------------------------------------------------------------------- #
# --resume
# --------------------------------------------------------------------------- #


def test_resume_keeps_the_dataset(tmp_path, capsys, fashion_dir):
    data = ["--data-dir", str(tmp_path / "fashion")]
    ckpt = tmp_path / "ckpt.npz"
    code, _, err = run(["--dataset", "idx", "--checkpoint", str(ckpt)] + data + QUICK, capsys)
    assert code == 0, err
    assert nn.load_checkpoint(ckpt)["extra"]["cli"]["settings"]["dataset"] == "idx"

    code, _, err = run(["--resume", str(ckpt), "--dataset", "fashion_mnist"] + data + QUICK,
                       capsys)
    assert code == 2
    assert "--dataset fashion_mnist differs from the checkpoint's idx" in err

    # without --dataset the checkpoint's is used
    code, out, err = run(["--resume", str(ckpt), "--epochs", "2", "--batch-size", "32",
                          "--no-download"] + data, capsys)
    assert code == 0, err
    assert "train lenet5 on idx" in out and "checksums NOT verified" in out


def test_resume_rejects_a_forged_dataset(tmp_path, capsys, fashion_dir, monkeypatch):
    data = ["--data-dir", str(tmp_path / "fashion")]
    ckpt = tmp_path / "ckpt.npz"
    save = nn.save_checkpoint

    def forged(path, model, optimizer, epoch, rng_state, extra=None):
        extra = copy.deepcopy(extra)
        extra["cli"]["settings"]["dataset"] = "cifar10"
        return save(path, model, optimizer, epoch, rng_state, extra)

    monkeypatch.setattr(nn, "save_checkpoint", forged)
    assert run(["--dataset", "idx", "--checkpoint", str(ckpt)] + data + QUICK, capsys)[0] == 0
    code, _, err = run(["--resume", str(ckpt), "--epochs", "2"] + data + QUICK, capsys)
    assert code == 2 and "stored --dataset cifar10 is not a valid value" in err


def test_checkpoint_without_dataset_resumes_as_mnist(tmp_path, capsys, fashion_dir, monkeypatch):
    data = ["--data-dir", str(tmp_path / "fashion")]
    ckpt = tmp_path / "old.npz"
    save = nn.save_checkpoint

    def as_before_dataset_existed(path, model, optimizer, epoch, rng_state, extra=None):
        extra = copy.deepcopy(extra)
        del extra["cli"]["settings"]["dataset"]
        return save(path, model, optimizer, epoch, rng_state, extra)

    monkeypatch.setattr(nn, "save_checkpoint", as_before_dataset_existed)
    assert run(["--dataset", "idx", "--checkpoint", str(ckpt)] + data + QUICK, capsys)[0] == 0
    assert "dataset" not in nn.load_checkpoint(ckpt)["extra"]["cli"]["settings"]

    code, _, err = run(["--resume", str(ckpt), "--dataset", "idx", "--epochs", "2"] + data
                       + QUICK, capsys)
    assert code == 2 and "--dataset idx differs from the checkpoint's mnist" in err
    # as mnist, the generated files fail MNIST's checksums
    code, _, err = run(["--resume", str(ckpt), "--epochs", "2"] + data + QUICK, capsys)
    assert code == 1 and "cannot load MNIST" in err and "SHA256" in err


def test_help_documents_dataset(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0
    out = " ".join(out.split())  # argparse wraps to the terminal's width
    assert "--dataset {mnist,fashion_mnist,idx}" in out
    assert "checksums NOT verified" in out
