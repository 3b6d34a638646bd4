"""Fused ReLU: conv2d(activation='relu'), conv2d_backward(relu_output=...), relu kernels."""

import numpy as np
import pytest

import fastconv
from fastconv import reference as R


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_relu_forward_and_backward_match_unfused(dtype):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((3, 4, 10, 9)).astype(dtype)
    w = rng.standard_normal((6, 4, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    pre = R.conv2d(x, w, b, 1, 1)
    y = fastconv.conv2d(x, w, b, 1, 1, activation="relu")
    tol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(y, np.maximum(pre, 0), rtol=tol, atol=tol)
    gy = rng.standard_normal(y.shape).astype(dtype)
    got = fastconv.conv2d_backward(gy, x, w, 1, 1, relu_output=y)
    want = R.conv2d_backward(np.where(pre > 0, gy, 0), x, w, 1, 1)
    for a, e in zip(got, want):
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol * 10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 17, 200_003])
def test_relu_kernels(dtype, n):
    rng = np.random.default_rng(n)
    z = rng.standard_normal(n).astype(dtype)
    z[: n // 5] = 0  # zeros pass no gradient
    np.testing.assert_array_equal(fastconv.relu(z), np.maximum(z, 0))
    g = rng.standard_normal(n).astype(dtype)
    np.testing.assert_array_equal(fastconv.relu_backward(g, z), np.where(z > 0, g, 0))
    out = np.empty_like(z)
    assert fastconv.relu(z, out=out) is out
    fastconv.relu(z, out=z)  # in place
    np.testing.assert_array_equal(z, np.maximum(z, 0))


def test_relu_bad_input():
    with pytest.raises(TypeError, match="relu: input must have dtype float32 or float64"):
        fastconv.relu(np.arange(3))
    with pytest.raises(ValueError, match="relu_backward: output must have the shape"):
        fastconv.relu_backward(np.zeros(3), np.zeros(4))
    with pytest.raises(TypeError, match="relu_backward: output has dtype float32"):
        fastconv.relu_backward(np.zeros(3), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="conv2d: activation must be None or 'relu'"):
        fastconv.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3)), activation="tanh")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_regression_relu_propagates_nan(dtype, simd):
    """BUG (found by the nn tests): the compiled ReLU, alone and fused into conv2d,
    wrote 0 for NaN (x > 0 ? x : 0), so a diverged layer was rectified and NaN hidden
    from the loss check; np.maximum and torch.relu keep NaN. NaN sits in a full
    vector and in a row's tail, at every SIMD level."""
    x = np.linspace(-3, 3, 2 * 67).astype(dtype).reshape(1, 1, 2, 67)
    x[0, 0, 0, 5] = x[0, 0, 1, 66] = np.nan
    want = np.maximum(x, 0)
    np.testing.assert_array_equal(fastconv.relu(x), want)
    y = fastconv.conv2d(x, np.ones((1, 1, 1, 1), dtype), activation="relu")
    np.testing.assert_array_equal(y, want)
    g = np.full(x.shape, 2.0, dtype)
    # as torch.relu's backward: (y <= 0) ? 0 : g, so the gradient passes at NaN
    np.testing.assert_array_equal(fastconv.relu_backward(g, y), np.where(want <= 0, 0, g))
