"""Tensors past 2**31 elements (opt in: ``python -m pytest tests/test_large.py -m large``).

Any 32-bit offset, index or size on the path (Cython, C, im2col-style buffers,
OpenMP loop counters) wraps past element 2**31. These build real workloads that
cross it and check slices at both ends against an exact oracle on the matching
sub-problem: integer-valued inputs keep every float32 sum exact, so the check
is bit for bit. One test needs ~9-11 GiB; run them one at a time on a 24 GiB
machine (each test frees its arrays before returning).

tests/test_conv.py and tests/test_pool.py have two more large cases (one conv
output plane set and one max-pool plane past 2**31); these add random data,
channel slices at both ends and pooling over many planes.
"""

import gc

import numpy as np
import pytest

import fastconv

from test_exactness import avg_pool_sum_int, conv_int, max_pool_int

pytestmark = pytest.mark.large


def _bitwise(got, want_int, what):
    want = want_int.astype(got.dtype)
    if got.tobytes() != want.tobytes():
        bad = np.argwhere(got != want)
        raise AssertionError(f"{what}: {len(bad)} differ, first at {tuple(bad[0])}: "
                             f"{got[tuple(bad[0])]} vs {want[tuple(bad[0])]}")


def test_conv2d_output_past_2_31_elements_matches_oracle_slices():
    H = W = 2048
    K = 520  # 520 * 2048 * 2048 = 2_181_038_080 > 2**31 output elements
    rng = np.random.default_rng(31)
    xi = rng.integers(-3, 4, size=(1, 1, H, W))
    wi = rng.integers(-3, 4, size=(K, 1, 3, 3))
    bi = rng.integers(-3, 4, size=K)
    y = fastconv.conv2d(xi.astype(np.float32), wi.astype(np.float32), bi.astype(np.float32),
                        padding=1)
    assert y.shape == (1, K, H, W) and y.size > 2**31
    xp = np.pad(xi, ((0, 0), (0, 0), (1, 1), (1, 1)))

    def oracle(ks, r0, r1):  # output rows r0..r1-1 read padded rows r0..r1+1
        return conv_int(xp[:, :, r0:r1 + 2], wi[ks], bi[ks], 1, 0, 1, 1)

    first, last = slice(0, 3), slice(K - 3, K)
    for ks in (first, last, slice(K // 2, K // 2 + 1)):
        for r0, r1 in ((0, 4), (H // 2 - 2, H // 2 + 2), (H - 4, H)):
            _bitwise(y[:, ks, r0:r1], oracle(ks, r0, r1), f"conv2d channels {ks} rows {r0}:{r1}")
    # the very last element lies past 2**31 in flat order
    assert np.ravel_multi_index((0, K - 1, H - 1, W - 1), y.shape) > 2**31
    del y
    gc.collect()


def _int_planes(shape, seed):
    """Small-integer float32 data, filled plane by plane (no int64 copy of it all)."""
    rng = np.random.default_rng(seed)
    x = np.empty(shape, np.float32)
    for n in range(shape[0]):
        for c in range(shape[1]):
            x[n, c] = rng.integers(-100, 101, size=shape[2:], dtype=np.int16)
    return x


def test_pooling_input_past_2_31_elements_over_many_planes():
    shape = (2, 64, 4096, 4100)  # 2_149_580_800 > 2**31 input elements, 8 GiB
    x = _int_planes(shape, 7)
    assert x.size > 2**31
    checks = [(0, 0), (0, 63), (1, 0), (1, 63)]  # plane offsets below and above 2**31

    # peak ~15 GiB: x (8 GiB) + y (2 GiB) + indices (4 GiB); x is gone before grad_x
    a = fastconv.avg_pool2d(x, 2)
    for n, c in checks:
        xi = x[n:n + 1, c:c + 1].astype(np.int64)
        want = avg_pool_sum_int(xi, 2, 2, 0).astype(np.float32) / np.float32(4)
        assert a[n:n + 1, c:c + 1].tobytes() == want.tobytes(), f"avg_pool2d plane {(n, c)}"
    del a
    gc.collect()

    y, idx = fastconv.max_pool2d(x, 3, 2, 1, return_indices=True)
    for n, c in checks:
        xi = x[n:n + 1, c:c + 1].astype(np.int64)
        want_y, want_idx = max_pool_int(xi, 3, 2, 1)
        _bitwise(y[n:n + 1, c:c + 1], want_y, f"max_pool2d plane {(n, c)}")
        np.testing.assert_array_equal(idx[n:n + 1, c:c + 1], want_idx)
    del x
    gc.collect()
    gx = fastconv.max_pool2d_backward(y, idx, shape)
    for n, c in checks:  # each plane's gradient: its window maxima routed back
        want = np.zeros(shape[2] * shape[3], np.float64)
        np.add.at(want, idx[n, c].ravel(), y[n, c].ravel().astype(np.float64))
        _bitwise(gx[n, c].ravel(), want, f"max_pool2d_backward plane {(n, c)}")
    del gx, y, idx
    gc.collect()
