"""Tests for fastconv.datasets: IDX reading, MNIST loading and download, batching, augmentation.

The real MNIST files are read from ``shared/mnist`` beside the repository (or
``$FASTCONV_MNIST_DIR``). Downloads are exercised against a local HTTP server on
127.0.0.1; nothing here touches the internet.
"""

import functools
import gzip
import hashlib
import http.server
import os
import shutil
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest

from fastconv import datasets as ds

MNIST_DIR = Path(
    os.environ.get("FASTCONV_MNIST_DIR")
    or Path(__file__).resolve().parents[1].parent / "shared" / "mnist"
)
HAVE_MNIST = all((MNIST_DIR / (n + ".gz")).is_file() or (MNIST_DIR / n).is_file() for n in ds.MNIST_FILES)
needs_mnist = pytest.mark.skipif(
    not HAVE_MNIST, reason=f"MNIST IDX files not found in {MNIST_DIR} (set FASTCONV_MNIST_DIR)"
)

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    # The user's own settings must not leak into the tests.
    monkeypatch.delenv(ds.ENV_DATA_DIR, raising=False)
    monkeypatch.delenv(ds.ENV_MIRRORS, raising=False)


# --------------------------------------------------------------------------- #
# helpers: small IDX files
# --------------------------------------------------------------------------- #


def idx_bytes(arr, type_byte=0x08):
    arr = np.asarray(arr)
    dt = ds._IDX_DTYPES[type_byte]
    head = bytes([0, 0, type_byte, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(dt).tobytes()


def write(path, data, compress=False):
    path = Path(path)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def make_fake_dataset(directory, n_train=20, n_test=10, h=28, w=28, compress=True, seed=0):
    """Four small, valid IDX files with MNIST's names; return their decompressed bytes."""
    rng = np.random.default_rng(seed)
    arrays = [
        rng.integers(0, 256, (n_train, h, w), dtype=np.uint8),
        rng.integers(0, 10, n_train, dtype=np.uint8),
        rng.integers(0, 256, (n_test, h, w), dtype=np.uint8),
        rng.integers(0, 10, n_test, dtype=np.uint8),
    ]
    contents = {}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(ds.MNIST_FILES, arrays):
        data = idx_bytes(arr)
        contents[name] = data
        write(directory / (name + ".gz" if compress else name), data, compress)
    return arrays, contents


def sha(data):
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- #
# real MNIST
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def mnist():
    if not HAVE_MNIST:
        pytest.skip(f"MNIST IDX files not found in {MNIST_DIR} (set FASTCONV_MNIST_DIR)")
    return ds.load_mnist(MNIST_DIR, download=False)


@needs_mnist
def test_mnist_shapes_dtypes_range(mnist):
    (x_tr, y_tr), (x_te, y_te) = mnist
    assert x_tr.shape == (60000, 1, 28, 28) and x_te.shape == (10000, 1, 28, 28)
    assert x_tr.dtype == np.float32 and x_te.dtype == np.float32
    assert y_tr.dtype == np.int64 and y_te.dtype == np.int64
    assert x_tr.min() == 0.0 and x_tr.max() == 1.0
    assert x_tr.flags.c_contiguous and x_tr.flags.writeable


@needs_mnist
def test_mnist_figures_match_readme(mnist):
    (x_tr, y_tr), (_, y_te) = mnist
    assert np.bincount(y_tr).tolist() == TRAIN_COUNTS
    assert np.bincount(y_te).tolist() == TEST_COUNTS
    assert abs(float(x_tr.mean(dtype=np.float64)) - 0.1307) < 5e-5
    assert abs(float(x_tr.std(dtype=np.float64)) - 0.3081) < 5e-5


@needs_mnist
def test_mnist_float64_and_checksums_of_shared_files():
    for name in ds.MNIST_FILES[1::2]:  # the label files: cheap
        y = ds.read_idx(MNIST_DIR / (name + ".gz"), sha256=ds.MNIST_SHA256[name])
        assert y.dtype == np.uint8 and y.ndim == 1
    x = ds.read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    assert x.shape == (10000, 28, 28)


@needs_mnist
def test_mnist_from_env_dir_and_dtype(monkeypatch, tmp_path):
    # Uncompressed copies of the small files + gzipped big ones: both kinds read.
    for name in ds.MNIST_FILES:
        src = MNIST_DIR / (name + ".gz")
        if "labels" in name:
            (tmp_path / name).write_bytes(gzip.decompress(src.read_bytes()))
        else:
            shutil.copy(src, tmp_path / (name + ".gz"))
    monkeypatch.setenv(ds.ENV_DATA_DIR, str(tmp_path))
    assert ds.default_data_dir() == tmp_path
    (_, y_tr), (x_te, _) = ds.load_mnist(download=False, dtype=np.float64)
    assert x_te.dtype == np.float64 and np.bincount(y_tr).tolist() == TRAIN_COUNTS


def test_default_data_dir_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert ds.default_data_dir() == tmp_path / "fastconv" / "mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert ds.default_data_dir() == Path.home() / ".cache" / "fastconv" / "mnist"


# --------------------------------------------------------------------------- #
# read_idx: good and bad files
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("type_byte", sorted(ds._IDX_DTYPES))
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_all_types(tmp_path, type_byte, compress):
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(ds._IDX_DTYPES[type_byte].newbyteorder("="))
    if type_byte == 0x08:
        arr = arr + 5
    path = write(tmp_path / "f", idx_bytes(arr, type_byte), compress)
    out = ds.read_idx(path)
    assert out.dtype == arr.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)
    out[0, 0, 0] = 1  # writable


def test_read_idx_checksum(tmp_path):
    data = idx_bytes(np.arange(10, dtype=np.uint8))
    path = write(tmp_path / "labels", data, compress=True)
    ds.read_idx(path, sha256=sha(data))
    with pytest.raises(ValueError, match=r"labels.*SHA-256"):
        ds.read_idx(path, sha256="0" * 64)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d[:-1], "truncated"),
        (lambda d: d[:10], "truncated"),
        (lambda d: d[:3], "not an IDX file"),
        (lambda d: d + b"\x00", "trailing bytes"),
        (lambda d: b"\x01" + d[1:], "bad magic"),
        (lambda d: d[:2] + b"\x07" + d[3:], "bad magic"),
        (lambda d: d[:3] + b"\x00" + d[4:], "0 dimensions"),
        (lambda d: b"", "not an IDX file"),
    ],
    ids=["short-data", "short-header", "tiny", "long", "magic", "type", "ndim0", "empty"],
)
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_corrupt(tmp_path, mutate, match, compress):
    data = mutate(idx_bytes(np.zeros((3, 4, 5), np.uint8)))
    path = write(tmp_path / "broken-idx3-ubyte", data, compress)
    with pytest.raises(ValueError, match=match) as info:
        ds.read_idx(path)
    assert "broken-idx3-ubyte" in str(info.value)


def test_read_idx_bad_gzip(tmp_path):
    gz = gzip.compress(idx_bytes(np.zeros((30, 4, 5), np.uint8)))
    for name, data in [("cut.gz", gz[: len(gz) // 2]), ("garbled.gz", gz[:12] + b"\xff" * (len(gz) - 12))]:
        path = write(tmp_path / name, data)
        with pytest.raises(ValueError, match=rf"{name}.*corrupt gzip"):
            ds.read_idx(path)


def test_read_idx_missing(tmp_path):
    with pytest.raises(FileNotFoundError):
        ds.read_idx(tmp_path / "nope")


# --------------------------------------------------------------------------- #
# load_idx_dataset / load_mnist on local files
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("compress", [False, True])
def test_load_idx_dataset_fake(tmp_path, compress):
    arrays, _ = make_fake_dataset(tmp_path, h=8, w=6, compress=compress)
    (x_tr, y_tr), (x_te, y_te) = ds.load_idx_dataset(tmp_path)
    assert x_tr.shape == (20, 1, 8, 6) and x_te.shape == (10, 1, 8, 6)
    np.testing.assert_array_equal(x_tr[:, 0] * 255, arrays[0].astype(np.float32))
    assert x_tr.dtype == np.float32 and y_tr.dtype == np.int64
    np.testing.assert_array_equal(y_te, arrays[3])


def test_load_idx_dataset_custom_names(tmp_path):
    # e.g. a dataset shipped under other file names
    arrays, contents = make_fake_dataset(tmp_path / "src")
    names = ("a-img", "a-lab", "b-img", "b-lab")
    for name, orig in zip(names, ds.MNIST_FILES):
        write(tmp_path / name, contents[orig])
    (_, y_tr), _ = ds.load_idx_dataset(tmp_path, names, sha256={"a-lab": sha(contents[ds.MNIST_FILES[1]])})
    np.testing.assert_array_equal(y_tr, arrays[1])
    with pytest.raises(ValueError, match="names must be 4"):
        ds.load_idx_dataset(tmp_path, names[:3])


def test_load_mnist_verify_false_for_other_datasets(tmp_path):
    # Files with MNIST's names but other content (Fashion-MNIST, say) need verify=False.
    make_fake_dataset(tmp_path)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*SHA-256"):
        ds.load_mnist(tmp_path, download=False)
    (x_tr, _), _ = ds.load_mnist(tmp_path, download=False, verify=False)
    assert x_tr.shape == (20, 1, 28, 28)


def test_load_missing_file_no_download(tmp_path):
    make_fake_dataset(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        ds.load_mnist(tmp_path, download=False, verify=False)


def test_load_mismatched_files(tmp_path):
    _, contents = make_fake_dataset(tmp_path)
    write(tmp_path / "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(7, np.uint8)), compress=True)
    with pytest.raises(ValueError, match="20 images but .*7 labels"):
        ds.load_idx_dataset(tmp_path)
    write(tmp_path / "train-labels-idx1-ubyte.gz", contents["train-images-idx3-ubyte"], compress=True)
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.*integer labels of shape"):
        ds.load_idx_dataset(tmp_path)


def test_load_truncated_local_file_named(tmp_path):
    _, contents = make_fake_dataset(tmp_path)
    write(tmp_path / "t10k-images-idx3-ubyte.gz", contents["t10k-images-idx3-ubyte"][:-100], compress=True)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.*truncated"):
        ds.load_idx_dataset(tmp_path)


def test_load_bad_dtype(tmp_path):
    with pytest.raises(TypeError, match="dtype"):
        ds.load_mnist(tmp_path, dtype=np.int32)


# --------------------------------------------------------------------------- #
# downloads from a local server
# --------------------------------------------------------------------------- #


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/cut/"):
            # promise 1000 bytes, send 20, hang up: a download cut off mid-way
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b" + b"\x00" * 18)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path / 'www'`` on 127.0.0.1; yields (directory, base_url)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def listing(directory):
    return sorted(p.name for p in Path(directory).iterdir()) if Path(directory).exists() else []


def test_download_fake_files_verified(server, tmp_path):
    root, url = server
    arrays, contents = make_fake_dataset(root)
    cache = tmp_path / "cache" / "nested"
    hashes = {n: sha(d) for n, d in contents.items()}
    (x_tr, y_tr), _ = ds.load_idx_dataset(cache, download=True, mirrors=[url], sha256=hashes, progress=False)
    np.testing.assert_array_equal(y_tr, arrays[1])
    assert listing(cache) == sorted(n + ".gz" for n in ds.MNIST_FILES)
    # second call reads the cache; the server is not needed
    for p in root.iterdir():
        p.unlink()
    ds.load_idx_dataset(cache, download=True, mirrors=[url], sha256=hashes, progress=False)


def test_download_uncompressed_body_kept_plain(server, tmp_path):
    root, url = server
    _, contents = make_fake_dataset(tmp_path / "src")
    for name, data in contents.items():  # a server that hands out the raw IDX bytes
        write(root / (name + ".gz"), data)
    cache = tmp_path / "cache"
    ds.load_idx_dataset(cache, download=True, mirrors=[url], progress=False)
    assert listing(cache) == sorted(ds.MNIST_FILES)


def test_download_falls_through_dead_and_corrupt_mirrors(server, tmp_path, monkeypatch):
    root, url = server
    (root / "good").mkdir()
    (root / "bad").mkdir()
    _, contents = make_fake_dataset(root / "good")
    for name, data in contents.items():
        write(root / "bad" / (name + ".gz"), data[:-5], compress=True)
    monkeypatch.setattr(ds, "MNIST_SHA256", {n: sha(d) for n, d in contents.items()})
    # mirrors from the environment: missing path (404), corrupt copies, then good ones
    monkeypatch.setenv(ds.ENV_MIRRORS, f"{url}missing/, {url}bad/ {url}good/")
    cache = tmp_path / "cache"
    ds.load_mnist(cache, progress=False)
    assert listing(cache) == sorted(n + ".gz" for n in ds.MNIST_FILES)


def test_download_corrupt_leaves_nothing(server, tmp_path, monkeypatch):
    root, url = server
    _, contents = make_fake_dataset(root)
    monkeypatch.setattr(ds, "MNIST_SHA256", {n: sha(d) for n, d in contents.items()})
    # flip one pixel: valid gzip and IDX structure, wrong checksum
    bad = bytearray(contents["train-images-idx3-ubyte"])
    bad[-1] ^= 0xFF
    write(root / "train-images-idx3-ubyte.gz", bytes(bad), compress=True)
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*SHA-256") as info:
        ds.load_mnist(cache, mirrors=[url], progress=False)
    assert url in str(info.value)
    assert listing(cache) == []  # no partial or unverified file, no temp file

    # garbage instead of gzip: also rejected, still nothing left
    write(root / "train-images-idx3-ubyte.gz", b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*corrupt gzip"):
        ds.load_mnist(cache, mirrors=[url], progress=False)
    assert listing(cache) == []


def test_download_unreachable_is_oserror(server, tmp_path):
    _, url = server
    cache = tmp_path / "cache"
    with pytest.raises(OSError, match="could not download train-images-idx3-ubyte") as info:
        ds.load_idx_dataset(cache, download=True, mirrors=[url + "nothing-here/"], progress=False)
    assert not isinstance(info.value, ValueError)
    assert listing(cache) == []


def test_download_cut_off_leaves_nothing(server, tmp_path):
    _, url = server
    cache = tmp_path / "cache"
    with pytest.raises(OSError, match=r"closed after 20 of 1000 bytes|IncompleteRead") as info:
        ds.load_idx_dataset(cache, download=True, mirrors=[url + "cut/"], progress=False)
    assert not isinstance(info.value, ValueError)
    assert listing(cache) == []


def test_download_progress_reaches_each_files_size_on_stderr(server, tmp_path, capsys,
                                                             monkeypatch):
    root, url = server
    # 200 random (incompressible) images: a ~157 kB train-images file that arrives
    # in several reads, so a bar that kept only the last read would fall short
    make_fake_dataset(root, n_train=200, n_test=2)
    sizes = {n: (root / (n + ".gz")).stat().st_size for n in ds.MNIST_FILES}
    assert sizes[ds.MNIST_FILES[0]] > 2 * ds.CHUNK
    # without tqdm: one line before and one after each file, with the byte count
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    ds.load_idx_dataset(tmp_path / "c", download=True, mirrors=url, progress=True)
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [line for name, size in sizes.items() for line in (
        f"downloading {name}.gz ...", f"downloaded {name}.gz ({size} bytes)")]
    # with a tqdm stand-in: one bar per file, told its total in bytes, fed every byte
    bars = []

    class FakeTqdm:
        def __init__(self, total, **kwargs):
            self.total, self.kwargs, self.steps, self.closed = total, kwargs, [], False
            bars.append(self)

        def update(self, n):
            self.steps.append(n)

        def close(self):
            self.closed = True

    monkeypatch.setitem(sys.modules, "tqdm.auto", types.SimpleNamespace(tqdm=FakeTqdm))
    ds.load_idx_dataset(tmp_path / "d", download=True, mirrors=url, progress=True)
    assert [(b.kwargs["desc"], b.total, sum(b.steps), b.closed) for b in bars] == [
        (name + ".gz", size, size, True) for name, size in sizes.items()]
    assert all(b.kwargs["unit"] == "B" and min(b.steps) > 0 for b in bars)
    assert len(bars[0].steps) >= 3  # the bar moved as the big file arrived
    # progress=False: no bar, nothing printed
    bars.clear()
    ds.load_idx_dataset(tmp_path / "e", download=True, mirrors=url, progress=False)
    assert bars == [] and capsys.readouterr() == ("", "")


@needs_mnist
def test_download_real_mnist_copies(server, tmp_path):
    root, url = server
    for name in ds.MNIST_FILES:
        shutil.copy(MNIST_DIR / (name + ".gz"), root / (name + ".gz"))
    cache = tmp_path / "cache"
    (x_tr, y_tr), (x_te, _) = ds.load_mnist(cache, mirrors=[url], progress=False)
    assert x_tr.shape == (60000, 1, 28, 28) and x_te.shape == (10000, 1, 28, 28)
    assert np.bincount(y_tr).tolist() == TRAIN_COUNTS
    assert listing(cache) == sorted(n + ".gz" for n in ds.MNIST_FILES)


# --------------------------------------------------------------------------- #
# batching
# --------------------------------------------------------------------------- #


def test_iterate_minibatches_covers_once_and_is_seeded():
    x = np.arange(103 * 2).reshape(103, 2)
    y = np.arange(103)
    batches = list(ds.iterate_minibatches(x, y, 10, rng=7))
    assert [len(b[1]) for b in batches] == [10] * 10 + [3]
    seen = np.concatenate([b[1] for b in batches])
    assert sorted(seen.tolist()) == list(range(103)) and seen.tolist() != list(range(103))
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0], 2 * yb)
    again = np.concatenate([b[1] for b in ds.iterate_minibatches(x, y, 10, rng=np.random.default_rng(7))])
    np.testing.assert_array_equal(seen, again)
    plain = list(ds.iterate_minibatches(x, y, 50, shuffle=False, drop_last=True))
    assert [b[1][0] for b in plain] == [0, 50]


def test_iterate_minibatches_bad_args():
    x, y = np.zeros((4, 1)), np.zeros(4)
    with pytest.raises(ValueError, match="batch_size"):
        list(ds.iterate_minibatches(x, y, 0))
    with pytest.raises(TypeError, match="batch_size"):
        list(ds.iterate_minibatches(x, y, 2.5))
    with pytest.raises(ValueError, match="4 samples but y has 3"):
        list(ds.iterate_minibatches(x, y[:3], 2))
    with pytest.raises(TypeError, match="rng"):
        list(ds.iterate_minibatches(x, y, 2, rng="seed"))


def test_one_hot():
    out = ds.one_hot(np.array([0, 3, 9]))
    assert out.shape == (3, 10) and out.dtype == np.float32
    np.testing.assert_array_equal(out.argmax(1), [0, 3, 9])
    assert out.sum() == 3
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        ds.one_hot([0, 3], num_classes=3)
    with pytest.raises(ValueError, match="1-D integer"):
        ds.one_hot(np.zeros(3))


def test_train_val_split():
    x = np.arange(100)[:, None]
    y = np.arange(100)
    (xt, yt), (xv, yv) = ds.train_val_split(x, y, 0.2)
    assert len(yt) == 80 and len(yv) == 20
    assert sorted(np.concatenate([yt, yv]).tolist()) == list(range(100))
    np.testing.assert_array_equal(xt[:, 0], yt)
    (_, yt2), _ = ds.train_val_split(x, y, 0.2)
    np.testing.assert_array_equal(yt, yt2)  # fixed default seed
    (_, _), (_, yv3) = ds.train_val_split(x, y, 10, shuffle=False)
    np.testing.assert_array_equal(yv3, np.arange(90, 100))
    for bad in (0, 100, 1.5, 0.0):
        with pytest.raises(ValueError, match="val_size"):
            ds.train_val_split(x, y, bad)


# --------------------------------------------------------------------------- #
# augmentation
# --------------------------------------------------------------------------- #


def batch(n=16, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).random((n, 1, 28, 28)).astype(dtype)


def test_shift_known_amounts():
    x = np.arange(2 * 1 * 4 * 5, dtype=np.float32).reshape(2, 1, 4, 5) + 1
    out = ds.shift_images(x, dy=[1, -2], dx=[2, 0])
    expect0 = np.zeros((4, 5), np.float32)
    expect0[1:, 2:] = x[0, 0, :-1, :-2]  # down 1, right 2
    expect1 = np.zeros((4, 5), np.float32)
    expect1[:-2, :] = x[1, 0, 2:, :]  # up 2
    np.testing.assert_array_equal(out[0, 0], expect0)
    np.testing.assert_array_equal(out[1, 0], expect1)
    np.testing.assert_array_equal(ds.shift_images(x, 0, 0), x)
    assert not ds.shift_images(x, 9, 0).any()  # beyond the image: all zero
    # a single lit pixel moves to the expected place
    z = np.zeros((1, 3, 7, 7))
    z[0, :, 3, 3] = 1
    moved = ds.shift_images(z, -1, 2)
    assert moved[0, :, 2, 5].tolist() == [1, 1, 1] and moved.sum() == 3


def test_rotation_known():
    z = np.zeros((1, 1, 5, 5), np.float32)
    z[0, 0, 0, 2] = 1  # top middle
    np.testing.assert_allclose(ds.rotate_images(z, 90)[0, 0, 2, 0], 1, atol=1e-6)  # -> left middle
    np.testing.assert_allclose(ds.rotate_images(z, -90)[0, 0, 2, 4], 1, atol=1e-6)  # -> right middle
    np.testing.assert_allclose(ds.rotate_images(z, 180)[0, 0, 4, 2], 1, atol=1e-6)
    x = batch(4)
    np.testing.assert_array_equal(ds.rotate_images(x, 0), x)
    # a blob in the centre keeps its mass under small rotations
    c = np.zeros((1, 1, 28, 28))
    c[0, 0, 10:18, 10:18] = 1
    assert abs(ds.rotate_images(c, 7).sum() - 64) < 0.5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "aug",
    [
        ds.RandomShift(2),
        ds.RandomRotation(10),
        ds.GaussianNoise(0.05),
        ds.Compose([ds.RandomShift(3), ds.RandomRotation(15), ds.GaussianNoise(0.1)]),
    ],
    ids=repr,
)
def test_augment_shape_dtype_range_seeded(aug, dtype):
    x = batch(dtype=dtype)
    x_copy = x.copy()
    a = aug(x, np.random.default_rng(3))
    b = aug(x, np.random.default_rng(3))
    c = aug(x, np.random.default_rng(4))
    assert a.shape == x.shape and a.dtype == dtype
    assert a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(x, x_copy)  # input untouched


def test_random_shift_is_a_shift():
    x = batch(8)
    out = ds.RandomShift(2)(x, np.random.default_rng(0))
    for i in range(len(x)):
        assert any(
            np.array_equal(out[i : i + 1], ds.shift_images(x[i : i + 1], dy, dx))
            for dy in range(-2, 3)
            for dx in range(-2, 3)
        )


def test_augment_bad_args():
    with pytest.raises(ValueError, match="max_shift"):
        ds.RandomShift(-1)
    with pytest.raises(ValueError, match="max_degrees"):
        ds.RandomRotation(400)
    with pytest.raises(ValueError, match="std"):
        ds.GaussianNoise(-0.1)
    with pytest.raises(TypeError, match=r"transforms\[1\]"):
        ds.Compose([ds.RandomShift(), 3])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ds.RandomShift()(np.zeros((28, 28), np.float32), np.random.default_rng())
    with pytest.raises(TypeError, match="float32 or float64"):
        ds.RandomRotation()(np.zeros((1, 1, 28, 28), np.uint8), np.random.default_rng())


def test_expand_dataset():
    x = batch(10)
    y = np.arange(10)
    aug = ds.Compose([ds.RandomShift(2), ds.RandomRotation(10)])
    xe, ye = ds.expand_dataset(x, y, 2, aug, seed=5, chunk_size=3)
    assert xe.shape == (30, 1, 28, 28) and xe.dtype == np.float32
    np.testing.assert_array_equal(ye, np.tile(y, 3))
    np.testing.assert_array_equal(xe[:10], x)
    assert not np.array_equal(xe[10:20], xe[20:30])
    xe2, _ = ds.expand_dataset(x, y, 2, aug, seed=5, chunk_size=3)
    np.testing.assert_array_equal(xe, xe2)
    xo, yo = ds.expand_dataset(x, y, 1, aug, include_original=False)
    assert xo.shape == (10, 1, 28, 28) and len(yo) == 10
    with pytest.raises(TypeError, match="transform"):
        ds.expand_dataset(x, y, 1, None)
