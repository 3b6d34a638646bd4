"""Bad input is refused at the boundary, with a message that names the argument.

ValueError for shapes and parameters, TypeError for dtypes, before any kernel
runs (so absurd sizes never reach an allocation). The same matrix runs against
fastconv.reference, which must refuse nonsense rather than return garbage.
"""

import numpy as np
import pytest

import fastconv
from fastconv import reference


def z(*shape, dtype=np.float64):
    return np.zeros(shape, dtype)


# The contract calls the input ``x``; messages may call it "input" (as the
# house style's own example does).
X_NAME = r"\bx\b|input"

X = z(2, 3, 8, 8)
W = z(4, 3, 3, 3)
B = z(4)
Y = z(2, 4, 6, 6)  # conv2d(X, W) output / grad_out
P = z(2, 3, 4, 4)  # 2x2 pool output
IDX = np.zeros((2, 3, 4, 4), np.int64)

# (id, exception, match, call(m)) where m is the module under test
CASES = [
    # -- conv2d: ranks and shapes -------------------------------------------
    ("conv x 3-D", ValueError, "batch", lambda m: m.conv2d(X[0], W)),
    ("conv x 2-D", ValueError, X_NAME, lambda m: m.conv2d(X[0, 0], W)),
    ("conv x 5-D", ValueError, X_NAME, lambda m: m.conv2d(X[None], W)),
    ("conv weight 3-D", ValueError, "weight", lambda m: m.conv2d(X, W[0])),
    ("conv channel mismatch", ValueError, "channel", lambda m: m.conv2d(X, z(4, 2, 3, 3))),
    ("conv bias length", ValueError, "bias", lambda m: m.conv2d(X, W, z(5))),
    ("conv bias 2-D", ValueError, "bias", lambda m: m.conv2d(X, W, z(4, 1))),
    ("conv kernel > input", ValueError, "kernel|weight",
     lambda m: m.conv2d(z(1, 1, 2, 2), z(1, 1, 3, 3))),
    ("conv kernel > input one axis", ValueError, "kernel|weight",
     lambda m: m.conv2d(z(1, 1, 5, 2), z(1, 1, 3, 3), padding=(1, 0))),
    ("conv dilated kernel > input", ValueError, "kernel|weight|dilation",
     lambda m: m.conv2d(z(1, 1, 4, 4), z(1, 1, 3, 3), dilation=2)),
    # -- conv2d: hyper-parameters -------------------------------------------
    ("conv stride 0", ValueError, "stride", lambda m: m.conv2d(X, W, stride=0)),
    ("conv stride -1", ValueError, "stride", lambda m: m.conv2d(X, W, stride=(1, -1))),
    ("conv stride triple", ValueError, "stride", lambda m: m.conv2d(X, W, stride=(1, 1, 1))),
    ("conv dilation 0", ValueError, "dilation", lambda m: m.conv2d(X, W, dilation=0)),
    ("conv padding -1", ValueError, "padding", lambda m: m.conv2d(X, W, padding=-1)),
    ("conv padding (0, -2)", ValueError, "padding", lambda m: m.conv2d(X, W, padding=(0, -2))),
    ("conv padding 'full'", ValueError, "padding", lambda m: m.conv2d(X, W, padding="full")),
    ("conv padding 'SAME'", ValueError, "padding", lambda m: m.conv2d(X, W, padding="SAME")),
    ("conv same with stride 2", ValueError, "same|stride",
     lambda m: m.conv2d(X, W, stride=2, padding="same")),
    ("conv groups 0", ValueError, "groups", lambda m: m.conv2d(X, W, groups=0)),
    ("conv groups not dividing C", ValueError, "groups",
     lambda m: m.conv2d(z(2, 4, 8, 8), z(4, 2, 3, 3), groups=3)),
    ("conv groups not dividing K", ValueError, "groups",
     lambda m: m.conv2d(z(2, 4, 8, 8), z(3, 2, 3, 3), groups=2)),
    ("conv groups vs weight channels", ValueError, "groups|channel",
     lambda m: m.conv2d(z(2, 4, 8, 8), z(4, 4, 3, 3), groups=2)),
    # absurd sizes must be refused, not attempted
    ("conv stride 2**62", ValueError, "stride", lambda m: m.conv2d(X, W, stride=2**62)),
    ("conv padding 2**40", ValueError, "padding", lambda m: m.conv2d(X, W, padding=2**40)),
    ("conv padding (0, 2**40)", ValueError, "padding",
     lambda m: m.conv2d(X, W, padding=(0, 2**40))),
    ("conv dilation 2**40", ValueError, "dilation", lambda m: m.conv2d(X, W, dilation=2**40)),
    ("conv stride 2**64", ValueError, "stride", lambda m: m.conv2d(X, W, stride=2**64)),
    # -- conv2d: dtypes -------------------------------------------------------
    ("conv x int64", TypeError, X_NAME, lambda m: m.conv2d(X.astype(np.int64), W)),
    ("conv x int32", TypeError, X_NAME, lambda m: m.conv2d(X.astype(np.int32), W)),
    ("conv x complex", TypeError, X_NAME, lambda m: m.conv2d(X.astype(complex), W)),
    ("conv x object", TypeError, X_NAME, lambda m: m.conv2d(X.astype(object), W)),
    ("conv x bool", TypeError, X_NAME, lambda m: m.conv2d(X.astype(bool), W)),
    ("conv x float16", TypeError, X_NAME, lambda m: m.conv2d(X.astype(np.float16), W)),
    ("conv weight int", TypeError, "weight", lambda m: m.conv2d(X, W.astype(np.int64))),
    ("conv bias int", TypeError, "bias", lambda m: m.conv2d(X, W, B.astype(np.int64))),
    ("conv mixed x/weight", TypeError, "weight",
     lambda m: m.conv2d(X, W.astype(np.float32))),
    ("conv mixed x/weight f32 x", TypeError, "weight|" + X_NAME,
     lambda m: m.conv2d(X.astype(np.float32), W)),
    ("conv mixed bias", TypeError, "bias", lambda m: m.conv2d(X, W, B.astype(np.float32))),
    # -- conv2d_backward ------------------------------------------------------
    ("convb grad_out shape", ValueError, "grad_out",
     lambda m: m.conv2d_backward(z(2, 4, 6, 5), X, W)),
    ("convb grad_out channels", ValueError, "grad_out",
     lambda m: m.conv2d_backward(z(2, 5, 6, 6), X, W)),
    ("convb grad_out batch", ValueError, "grad_out",
     lambda m: m.conv2d_backward(z(3, 4, 6, 6), X, W)),
    ("convb grad_out 3-D", ValueError, "grad_out",
     lambda m: m.conv2d_backward(Y[0], X, W)),
    ("convb x 3-D", ValueError, "batch", lambda m: m.conv2d_backward(Y, X[0], W)),
    ("convb channel mismatch", ValueError, "channel",
     lambda m: m.conv2d_backward(Y, X, z(4, 2, 3, 3))),
    ("convb stride 0", ValueError, "stride",
     lambda m: m.conv2d_backward(Y, X, W, stride=0)),
    ("convb padding 2**40", ValueError, "padding",
     lambda m: m.conv2d_backward(Y, X, W, padding=2**40)),
    ("convb output_mask length", ValueError, "output_mask",
     lambda m: m.conv2d_backward(Y, X, W, output_mask=(True, True))),
    ("convb grad_out int", TypeError, "grad_out",
     lambda m: m.conv2d_backward(Y.astype(np.int64), X, W)),
    ("convb mixed grad_out", TypeError, "grad_out",
     lambda m: m.conv2d_backward(Y.astype(np.float32), X, W)),
    ("convb x complex", TypeError, X_NAME,
     lambda m: m.conv2d_backward(Y, X.astype(complex), W)),
    # -- max_pool2d / avg_pool2d ---------------------------------------------
    ("max x 3-D", ValueError, "batch", lambda m: m.max_pool2d(X[0], 2)),
    ("avg x 3-D", ValueError, "batch", lambda m: m.avg_pool2d(X[0], 2)),
    ("max kernel_size 0", ValueError, "kernel_size", lambda m: m.max_pool2d(X, 0)),
    ("avg kernel_size (2, 0)", ValueError, "kernel_size", lambda m: m.avg_pool2d(X, (2, 0))),
    ("max kernel > input", ValueError, "kernel_size",
     lambda m: m.max_pool2d(z(1, 1, 2, 2), 3)),
    ("avg kernel > input", ValueError, "kernel_size",
     lambda m: m.avg_pool2d(z(1, 1, 4, 2), 3)),
    ("max stride 0", ValueError, "stride", lambda m: m.max_pool2d(X, 2, 0)),
    ("avg stride -2", ValueError, "stride", lambda m: m.avg_pool2d(X, 2, -2)),
    ("max padding -1", ValueError, "padding", lambda m: m.max_pool2d(X, 2, 2, -1)),
    ("max padding > half kernel", ValueError, "padding", lambda m: m.max_pool2d(X, 2, 2, 2)),
    ("max padding > half kernel (3)", ValueError, "padding",
     lambda m: m.max_pool2d(X, 3, 1, 2)),
    ("avg padding > half kernel", ValueError, "padding",
     lambda m: m.avg_pool2d(X, (4, 2), 2, (1, 2))),
    # pooling has no string paddings, so a string is a wrong *type* here
    ("max padding string", (TypeError, ValueError), "padding",
     lambda m: m.max_pool2d(X, 2, 2, "same")),
    ("max kernel_size 2**40", ValueError, "kernel_size", lambda m: m.max_pool2d(X, 2**40)),
    ("max stride 2**62", ValueError, "stride", lambda m: m.max_pool2d(X, 2, 2**62)),
    ("avg stride 2**62", ValueError, "stride", lambda m: m.avg_pool2d(X, 2, 2**62)),
    ("max x int", TypeError, X_NAME, lambda m: m.max_pool2d(X.astype(np.int64), 2)),
    ("max x bool", TypeError, X_NAME, lambda m: m.max_pool2d(X.astype(bool), 2)),
    ("avg x complex", TypeError, X_NAME, lambda m: m.avg_pool2d(X.astype(complex), 2)),
    ("avg x object", TypeError, X_NAME, lambda m: m.avg_pool2d(X.astype(object), 2)),
    # -- max_pool2d_backward -------------------------------------------------
    ("maxb index = H*W", ValueError, "indices",
     lambda m: m.max_pool2d_backward(P, np.full(P.shape, 64, np.int64), X.shape)),
    ("maxb index -1", ValueError, "indices",
     lambda m: m.max_pool2d_backward(P, np.full(P.shape, -1, np.int64), X.shape)),
    ("maxb index huge", ValueError, "indices",
     lambda m: m.max_pool2d_backward(P, np.full(P.shape, 2**62, np.int64), X.shape)),
    ("maxb indices shape", ValueError, "indices",
     lambda m: m.max_pool2d_backward(P, IDX[:, :, :3], X.shape)),
    ("maxb grad_out vs input_shape", ValueError, "grad_out|input_shape",
     lambda m: m.max_pool2d_backward(P, IDX, (3, 3, 8, 8))),
    ("maxb input_shape length", ValueError, "input_shape",
     lambda m: m.max_pool2d_backward(P, IDX, (2, 3, 8))),
    ("maxb grad_out 3-D", ValueError, "grad_out",
     lambda m: m.max_pool2d_backward(P[0], IDX[0], X.shape)),
    ("maxb indices float", TypeError, "indices",
     lambda m: m.max_pool2d_backward(P, IDX.astype(np.float64), X.shape)),
    ("maxb grad_out int", TypeError, "grad_out",
     lambda m: m.max_pool2d_backward(IDX, IDX, X.shape)),
    # -- avg_pool2d_backward -------------------------------------------------
    ("avgb grad_out shape", ValueError, "grad_out",
     lambda m: m.avg_pool2d_backward(z(2, 3, 4, 3), X.shape, 2)),
    ("avgb grad_out channels", ValueError, "grad_out",
     lambda m: m.avg_pool2d_backward(z(2, 2, 4, 4), X.shape, 2)),
    ("avgb input_shape length", ValueError, "input_shape",
     lambda m: m.avg_pool2d_backward(P, (2, 3, 8), 2)),
    ("avgb padding > half kernel", ValueError, "padding",
     lambda m: m.avg_pool2d_backward(P, X.shape, 2, 2, 2)),
    ("avgb kernel > input", ValueError, "kernel_size",
     lambda m: m.avg_pool2d_backward(P, (2, 3, 2, 2), 3)),
    ("avgb grad_out int", TypeError, "grad_out",
     lambda m: m.avg_pool2d_backward(IDX, X.shape, 2)),
]


@pytest.mark.parametrize("impl", ["fastconv", "reference"])
@pytest.mark.parametrize("exc, match, call", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input_is_refused(impl, exc, match, call):
    with pytest.raises(exc, match=match):
        call(fastconv if impl == "fastconv" else reference)


def test_three_d_input_message_says_how_to_fix():
    with pytest.raises(ValueError) as info:
        fastconv.conv2d(X[0], W)
    msg = str(info.value)
    assert "batch" in msg and "(3, 8, 8)" in msg, msg


def test_channel_mismatch_message_gives_both_shapes():
    with pytest.raises(ValueError) as info:
        fastconv.conv2d(X, z(6, 1, 5, 5))
    msg = str(info.value)
    assert "(6, 1, 5, 5)" in msg and "(2, 3, 8, 8)" in msg, msg


@pytest.mark.parametrize("n", [0, -1])
def test_set_num_threads_refuses_nonsense(n, restore_threads):
    with pytest.raises(ValueError):
        fastconv.set_num_threads(n)


def test_validation_happens_before_any_write():
    """A refused call leaves its out buffer untouched."""
    buf = np.full((2, 4, 6, 6), 7.0)
    with pytest.raises(TypeError):
        fastconv.conv2d(X, W, B.astype(np.float32), out=buf)
    assert (buf == 7.0).all()
