"""conv2d and conv2d_backward against fastconv.reference, the oracle and PyTorch.

Every case runs for float32 and float64. Small cases are checked against all
three; the medium ones (big enough for the compiled kernels' blocking, SIMD
tails and threading to matter) skip the slow reference loops. The reference
and the oracle are also checked against each other and against PyTorch, so a
disagreement can be pinned on the right party.
"""

import itertools

import numpy as np
import pytest

import fastconv
from fastconv import reference

import oracle
from oracle import numerical_grad
from oracle import assert_close

DTYPES = [np.float32, np.float64]

# PyTorch's note that it copies the input for an even 'same' kernel.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")


def case(x, w, bias=True, stride=1, padding=0, dilation=1, groups=1):
    return dict(x=x, w=w, bias=bias, stride=stride, padding=padding,
                dilation=dilation, groups=groups)


# Small enough for the reference loops (well under 1000 output pixels each).
SMALL = {
    "1x1": case((2, 3, 4, 5), (4, 3, 1, 1)),
    "1x1_strided": case((1, 2, 5, 5), (3, 2, 1, 1), stride=2),
    "nonsquare": case((2, 3, 7, 5), (4, 3, 3, 2)),
    "nonsquare_wide_kernel": case((1, 2, 4, 9), (3, 2, 1, 4)),
    "strided": case((2, 2, 9, 8), (3, 2, 3, 3), stride=2),
    "strided_pair": case((1, 2, 8, 9), (2, 2, 2, 3), stride=(2, 3), padding=(1, 0)),
    "stride_gt_kernel": case((1, 1, 8, 8), (2, 1, 2, 2), stride=3),
    "padded": case((2, 2, 5, 4), (3, 2, 3, 3), padding=2),
    "padded_pair": case((1, 3, 5, 6), (2, 3, 3, 3), padding=(0, 1)),
    "pad_wider_than_kernel": case((1, 1, 3, 3), (2, 1, 2, 2), padding=3),
    "dilated": case((1, 2, 9, 8), (3, 2, 3, 3), dilation=2),
    "dilated_pair_padded": case((2, 2, 7, 9), (2, 2, 2, 3), dilation=(2, 3), padding=(1, 2)),
    "grouped": case((2, 4, 6, 5), (6, 2, 3, 3), groups=2),
    "depthwise": case((2, 3, 6, 6), (3, 1, 3, 3), groups=3, padding=1),
    "depthwise_multiplier": case((1, 3, 5, 6), (6, 1, 2, 2), groups=3, stride=2, padding=1),
    "same": case((2, 3, 6, 5), (4, 3, 3, 3), padding="same"),
    "same_even_kernel": case((1, 2, 5, 6), (3, 2, 2, 4), padding="same"),
    "same_dilated": case((1, 2, 7, 6), (2, 2, 3, 2), padding="same", dilation=(2, 3)),
    "valid": case((1, 2, 6, 6), (2, 2, 3, 3), padding="valid"),
    "batch_of_one": case((1, 3, 6, 6), (4, 3, 3, 3), padding=1),
    "empty_batch": case((0, 3, 6, 6), (4, 3, 3, 3), padding=1),
    "kernel_is_input": case((2, 2, 4, 5), (3, 2, 4, 5)),
    "one_pixel": case((2, 3, 1, 1), (4, 3, 1, 1)),
    "one_pixel_padded": case((1, 2, 1, 1), (3, 2, 3, 3), padding=1),
    "no_bias": case((2, 3, 5, 5), (4, 3, 3, 3), bias=False),
    "everything": case((2, 4, 9, 8), (6, 2, 3, 2), stride=(2, 1), padding=(2, 1),
                       dilation=(1, 2), groups=2),
}

# Too slow for the reference; sized to reach the kernels' blocked / SIMD paths.
MEDIUM = {
    "medium_3x3": case((4, 8, 17, 19), (16, 8, 3, 3), padding=1),
    "medium_5x5_strided": case((3, 6, 21, 18), (10, 6, 5, 5), stride=2, padding=2),
    "medium_grouped_dilated": case((2, 12, 15, 13), (12, 3, 3, 3), groups=4,
                                   dilation=2, padding=2),
    "medium_depthwise": case((2, 16, 13, 11), (16, 1, 3, 3), groups=16, padding=1),
    "medium_1x1": case((3, 16, 9, 11), (24, 16, 1, 1)),
    "lenet_c1": case((8, 1, 28, 28), (6, 1, 5, 5)),
    "wide_channels": case((2, 64, 5, 5), (32, 64, 3, 3), padding=1),
    "odd_widths": case((3, 5, 11, 37), (7, 5, 3, 5), padding=(1, 2)),
}

ALL = {**SMALL, **MEDIUM}
SOURCES = ["reference", "oracle", "torch"]
# (case, source) pairs: every case against oracle and torch, small ones also
# against the reference.
GRID = [pytest.param(c, s, id=f"{c}-{s}") for c in ALL for s in SOURCES
        if s != "reference" or c in SMALL]


def params(c):
    return dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"],
                groups=c["groups"])


def make(c, dtype, rng):
    x = rng.standard_normal(c["x"]).astype(dtype)
    w = rng.standard_normal(c["w"]).astype(dtype)
    b = rng.standard_normal(c["w"][0]).astype(dtype) if c["bias"] else None
    return x, w, b


def forward(source, c, x, w, b):
    """conv2d by ``source``, in float64 (float64 copies of the same values)."""
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    b64 = None if b is None else b.astype(np.float64)
    if source == "reference":
        return reference.conv2d(x64, w64, b64, **params(c))
    if source == "oracle":
        return oracle.conv2d(x64, w64, b64, **params(c))
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    bt = None if b64 is None else torch.from_numpy(b64)
    return F.conv2d(torch.from_numpy(x64), torch.from_numpy(w64), bt,
                    **params(c)).numpy()


def backward(source, c, g, x, w):
    """(grad_x, grad_w, grad_b) by ``source``, in float64."""
    g64, x64, w64 = (a.astype(np.float64) for a in (g, x, w))
    if source == "reference":
        return reference.conv2d_backward(g64, x64, w64, **params(c))
    if source == "oracle":
        return oracle.conv2d_backward(g64, x64, w64, **params(c))
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x64, requires_grad=True)
    wt = torch.tensor(w64, requires_grad=True)
    bt = torch.zeros(w.shape[0], dtype=torch.float64, requires_grad=True)
    y = torch.nn.functional.conv2d(xt, wt, bt, **params(c))
    y.backward(torch.from_numpy(g64))
    return tuple(t.grad.numpy() for t in (xt, wt, bt))


def out_shape(c):
    return reference.conv2d_output_shape(c["x"], c["w"], **params(c))


# --------------------------------------------------------------------------
# fastconv against each source
# --------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, source", GRID)
def test_conv2d(name, source, dtype, rng):
    c = ALL[name]
    x, w, b = make(c, dtype, rng)
    y = fastconv.conv2d(x, w, b, **params(c))
    assert_close(y, forward(source, c, x, w, b), dtype, f"conv2d {name} vs {source}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, source", GRID)
def test_conv2d_backward(name, source, dtype, rng):
    c = ALL[name]
    x, w, _ = make(c, dtype, rng)
    g = rng.standard_normal(out_shape(c)).astype(dtype)
    got = fastconv.conv2d_backward(g, x, w, **params(c))
    assert isinstance(got, tuple) and len(got) == 3
    for what, a, e in zip(("grad_x", "grad_weight", "grad_bias"), got,
                          backward(source, c, g, x, w)):
        assert_close(a, e, dtype, f"conv2d_backward {what} {name} vs {source}")


@pytest.mark.parametrize("name", ALL)
def test_conv2d_output_shape(name, rng):
    c = ALL[name]
    x, w, b = make(c, np.float64, rng)
    shape = fastconv.conv2d_output_shape(c["x"], c["w"], **params(c))
    assert tuple(shape) == fastconv.conv2d(x, w, b, **params(c)).shape
    assert tuple(shape) == oracle.conv2d(x, w, b, **params(c)).shape


@pytest.mark.parametrize("mask", list(itertools.product([True, False], repeat=3)))
def test_conv2d_backward_output_mask(mask, rng):
    c = SMALL["everything"]
    x, w, _ = make(c, np.float64, rng)
    g = rng.standard_normal(out_shape(c))
    full = fastconv.conv2d_backward(g, x, w, **params(c))
    got = fastconv.conv2d_backward(g, x, w, **params(c), output_mask=mask)
    assert len(got) == 3
    for want, a, f in zip(mask, got, full):
        if want:
            np.testing.assert_array_equal(a, f)
        else:
            assert a is None


# --------------------------------------------------------------------------
# Central differences (float64): the gradients are the forward's derivatives
# --------------------------------------------------------------------------

GRADCHECK = {
    "everything": case((1, 4, 6, 5), (4, 2, 3, 2), stride=(2, 1), padding=(1, 2),
                       dilation=(1, 2), groups=2),
    "same_even_kernel": case((2, 2, 4, 5), (2, 2, 2, 3), padding="same"),
    "depthwise_strided": case((1, 3, 4, 4), (3, 1, 3, 3), groups=3, stride=2, padding=1),
    "1x1": case((2, 2, 3, 3), (3, 2, 1, 1)),
    "uncovered_tail": case((1, 1, 6, 7), (1, 1, 2, 2), stride=3),  # last rows unread
}


@pytest.mark.parametrize("impl", ["fastconv", "reference"])
@pytest.mark.parametrize("name", GRADCHECK)
def test_conv2d_backward_central_differences(name, impl, rng):
    mod = fastconv if impl == "fastconv" else reference
    c = GRADCHECK[name]
    x, w, b = make(c, np.float64, rng)
    r = rng.standard_normal(out_shape(c))  # loss = sum(r * conv2d(x, w, b))

    def loss():
        return float(np.sum(r * mod.conv2d(x, w, b, **params(c))))

    gx, gw, gb = mod.conv2d_backward(r, x, w, **params(c))
    for what, analytic, a in (("grad_x", gx, x), ("grad_weight", gw, w), ("grad_bias", gb, b)):
        numeric = numerical_grad(loss, a)
        np.testing.assert_allclose(analytic, numeric, rtol=oracle.GRADCHECK_RTOL,
                                   atol=oracle.GRADCHECK_RTOL, err_msg=f"{impl} {what}")


# --------------------------------------------------------------------------
# The reference and the oracle on their own: either could be the wrong one
# --------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["oracle", "torch"])
@pytest.mark.parametrize("name", SMALL)
def test_reference_conv2d(name, source, rng):
    c = SMALL[name]
    x, w, b = make(c, np.float64, rng)
    g = rng.standard_normal(out_shape(c))
    assert_close(reference.conv2d(x, w, b, **params(c)), forward(source, c, x, w, b),
                 np.float64, f"reference.conv2d {name} vs {source}")
    for what, a, e in zip(("grad_x", "grad_weight", "grad_bias"),
                          reference.conv2d_backward(g, x, w, **params(c)),
                          backward(source, c, g, x, w)):
        assert_close(a, e, np.float64, f"reference.conv2d_backward {what} {name} vs {source}")


@pytest.mark.parametrize("name", ALL)
def test_oracle_conv2d_vs_torch(name, rng):
    c = ALL[name]
    x, w, b = make(c, np.float64, rng)
    y = forward("torch", c, x, w, b)
    assert_close(oracle.conv2d(x, w, b, **params(c)), y, np.float64, name)
    g = rng.standard_normal(y.shape)
    for a, e in zip(oracle.conv2d_backward(g, x, w, **params(c)),
                    backward("torch", c, g, x, w)):
        assert_close(a, e, np.float64, name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reference_conv2d_dtype_out_and_mask(dtype, rng):
    c = SMALL["everything"]
    x, w, b = make(c, dtype, rng)
    y = reference.conv2d(x, w, b, **params(c))
    assert y.dtype == dtype
    buf = np.empty_like(y)
    assert reference.conv2d(x, w, b, **params(c), out=buf) is buf
    np.testing.assert_array_equal(buf, y)
    g = rng.standard_normal(y.shape).astype(dtype)
    gx, gw, gb = reference.conv2d_backward(g, x, w, **params(c),
                                           output_mask=(False, True, False))
    assert gx is None and gb is None and gw.dtype == dtype and gw.shape == w.shape


# --------------------------------------------------------------------------
# Past 2**31 elements (opt in: -m large; ~9 GiB)
# --------------------------------------------------------------------------

@pytest.mark.large
def test_conv2d_output_past_2_31_elements():
    """Offsets into the output overflow a 32-bit int past element 2**31."""
    H, W, K = 8192, 8200, 32  # K*H*W = 2_149_580_800 > 2**31
    x = np.zeros((1, 1, H, W), np.float32)
    x[0, 0, -1, -3:] = [1.0, 2.0, 3.0]
    w = (np.arange(K, dtype=np.float32) + 1).reshape(K, 1, 1, 1)
    y = fastconv.conv2d(x, w, padding=(0, 1))  # (1, K, H, W + 2)
    assert y.shape == (1, K, H, W + 2)
    np.testing.assert_array_equal(y[0, -1, -1, -5:], [0, 32, 64, 96, 0])
    np.testing.assert_array_equal(y[0, 0, -1, -5:], [0, 1, 2, 3, 0])
    assert not y[0, -1, :-1].any()
