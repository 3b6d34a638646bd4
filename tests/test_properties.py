"""Property tests: random valid configurations, fastconv against the reference.

Shapes, strides, paddings, dilations, groups and dtypes are drawn by
hypothesis, biased towards the edges (1-pixel images, kernels as large as the
padded input, N = 0). The example count comes from the profile registered in
conftest.py: small by default, >= 100000 with FASTCONV_HYPOTHESIS_PROFILE=long.
"""

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastconv  # noqa: E402
from fastconv import reference  # noqa: E402

from oracle import assert_close  # noqa: E402

dtypes = st.sampled_from([np.float32, np.float64])
seeds = st.integers(0, 2**32 - 1)


def pair_or_int(draw, lo, hi):
    a = draw(st.integers(lo, hi))
    if draw(st.booleans()):
        return a, (a, a)
    b = draw(st.integers(lo, hi))
    return (a, b), (a, b)


def fitting_size(draw, extent, pad_lo, pad_hi, stride):
    """An input length that the (dilated) kernel fits, often exactly."""
    smallest = max(1, extent - pad_lo - pad_hi)
    # exactly fitting, or one stride short of another output, or anything small
    return draw(st.one_of(st.just(smallest), st.just(smallest + stride - 1),
                          st.integers(smallest, smallest + 7)))


@st.composite
def conv_configs(draw):
    groups = draw(st.sampled_from([1, 1, 1, 2, 3]))
    Cg = draw(st.integers(1, 3))
    Kg = draw(st.integers(1, 3))
    N = draw(st.sampled_from([0, 1, 1, 2, 3]))
    kernel_arg, (kh, kw) = pair_or_int(draw, 1, 4)
    dilation_arg, (dh, dw) = pair_or_int(draw, 1, 3)
    stride_arg, (sh, sw) = pair_or_int(draw, 1, 3)
    choice = draw(st.sampled_from(["int", "pair", "same", "valid"]))
    if choice == "same" and (sh, sw) == (1, 1):
        padding = "same"
        th, tw = dh * (kh - 1), dw * (kw - 1)
        pads = (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    elif choice == "valid":
        padding, pads = "valid", (0, 0, 0, 0)
    else:
        padding, (ph, pw) = pair_or_int(draw, 0, 3)
        pads = (ph, ph, pw, pw)
    H = fitting_size(draw, dh * (kh - 1) + 1, pads[0], pads[1], sh)
    W = fitting_size(draw, dw * (kw - 1) + 1, pads[2], pads[3], sw)
    return dict(
        x=(N, groups * Cg, H, W), w=(groups * Kg, Cg, kh, kw), bias=draw(st.booleans()),
        args=dict(stride=stride_arg, padding=padding, dilation=dilation_arg, groups=groups),
    )


@st.composite
def pool_configs(draw):
    kernel_arg, (kh, kw) = pair_or_int(draw, 1, 4)
    if draw(st.booleans()):
        stride_arg, (sh, sw) = None, (kh, kw)
    else:
        stride_arg, (sh, sw) = pair_or_int(draw, 1, 4)
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    padding = (ph, pw) if draw(st.booleans()) or ph != pw else ph
    H = fitting_size(draw, kh, ph, ph, sh)
    W = fitting_size(draw, kw, pw, pw, sw)
    N = draw(st.sampled_from([0, 1, 1, 2]))
    C = draw(st.integers(1, 3))
    return dict(x=(N, C, H, W),
                args=dict(kernel_size=kernel_arg, stride=stride_arg, padding=padding))


def values(rng, shape, dtype, ties):
    """Random normals, or small integers (many ties) when ``ties``."""
    if ties:
        return rng.integers(-2, 3, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


@given(conv_configs(), dtypes, seeds)
def test_conv2d_and_backward_match_reference(c, dtype, seed):
    rng = np.random.default_rng(seed)
    x = values(rng, c["x"], dtype, ties=False)
    w = values(rng, c["w"], dtype, ties=False)
    b = values(rng, c["w"][:1], dtype, ties=False) if c["bias"] else None
    y = fastconv.conv2d(x, w, b, **c["args"])
    assert_close(y, reference.conv2d(x, w, b, **c["args"]), dtype, f"conv2d {c}")
    g = values(rng, y.shape, dtype, ties=False)
    for what, got, want in zip(("grad_x", "grad_weight", "grad_bias"),
                               fastconv.conv2d_backward(g, x, w, **c["args"]),
                               reference.conv2d_backward(g, x, w, **c["args"])):
        assert_close(got, want, dtype, f"conv2d_backward {what} {c}")


@given(pool_configs(), dtypes, seeds, st.booleans(), st.booleans())
def test_max_pool2d_and_backward_match_reference(c, dtype, seed, ties, specials):
    rng = np.random.default_rng(seed)
    x = values(rng, c["x"], dtype, ties)
    if specials:  # NaN and infinities at random places
        x.flat[rng.integers(0, x.size, size=x.size // 3)] = rng.choice(
            np.array([np.nan, np.inf, -np.inf], dtype), size=x.size // 3)
    y, idx = fastconv.max_pool2d(x, **c["args"], return_indices=True)
    want_y, want_idx = reference.max_pool2d(x, **c["args"], return_indices=True)
    np.testing.assert_array_equal(y, want_y, err_msg=f"max_pool2d {c}")
    np.testing.assert_array_equal(idx, want_idx, err_msg=f"max_pool2d indices {c}")
    g = values(rng, y.shape, dtype, ties=False)
    assert_close(fastconv.max_pool2d_backward(g, idx, x.shape),
                 reference.max_pool2d_backward(g, idx, x.shape), dtype,
                 f"max_pool2d_backward {c}")


@given(pool_configs(), dtypes, seeds, st.booleans())
def test_avg_pool2d_and_backward_match_reference(c, dtype, seed, count_include_pad):
    rng = np.random.default_rng(seed)
    kw = dict(c["args"], count_include_pad=count_include_pad)
    x = values(rng, c["x"], dtype, ties=False)
    y = fastconv.avg_pool2d(x, **kw)
    assert_close(y, reference.avg_pool2d(x, **kw), dtype, f"avg_pool2d {c}")
    g = values(rng, y.shape, dtype, ties=False)
    assert_close(fastconv.avg_pool2d_backward(g, x.shape, **kw),
                 reference.avg_pool2d_backward(g, x.shape, **kw), dtype,
                 f"avg_pool2d_backward {c}")


@given(conv_configs())
def test_conv2d_output_shape_matches_reference(c):
    args = c["args"]
    assert tuple(fastconv.conv2d_output_shape(c["x"], c["w"], **args)) == \
        reference.conv2d_output_shape(c["x"], c["w"], **args)
