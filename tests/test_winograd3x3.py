"""Winograd F(4x4, 3x3) convolution (float32; csrc/fc_winograd.c with mt = 4).

Each 4x4 output tile comes from a transformed 6x6 input tile (B^T with 4s and
5s) and transformed weights (G holds 1/6 and 1/24); the output transform A^T
holds 4s and 8s. It rounds differently from the direct kernels, so it is
checked against float64 oracles with one stated tolerance:

    |got - want| <= WINO3_ATOL * max|want|,   WINO3_ATOL = 5e-5

Measured worst cases (max error / max|want|, docs/design.md has the table):
N(0, 1) data 5.3e-6 / 6.7e-6 (y / grad_x) at 32 -> 64 channels, 8.4e-6 /
9.5e-6 for bench shape e (64 -> 64), 1.3e-5 / 1.1e-5 at 256 -> 256; the direct
float32 kernels reach about 7e-7 on the same data. The cases here have at most
33 channels: the tolerance leaves a 7x margin there (3.8x at 256 channels).
grad_weight: 2.5e-6 .. 3.8e-6 on N(0, 1) data (docs/design.md).
"""

import numpy as np
import pytest

import oracle

import fastconv
from fastconv import _kernels, _routes, nn
from fastconv import functional as F
from fastconv import reference as R
from fastconv._geometry import ConvGeom
from fastconv.nn.plan import InferencePlan
from fastconv.nn.plan_steps import _Conv
from fastconv.nn.trainer import _probabilities

WINO3_ATOL = 5e-5

# (N, C, H, W, K, padding): odd sizes (partial edge tiles on both sides),
# every padding 0..2 and per-side mixes, 1 channel, channel counts off every
# kernel width, one image, rows of more than 16 tiles (W > 64), narrow rows
# transformed in pairs (W <= 28) and outputs smaller than one tile
CASES = [
    (2, 3, 7, 9, 5, 1),
    (3, 4, 6, 5, 7, 0),
    (2, 17, 13, 11, 19, 1),
    (1, 2, 5, 5, 3, 2),
    (2, 1, 12, 12, 6, 1),
    (3, 5, 9, 8, 4, 2),
    (1, 16, 14, 14, 16, 1),
    (2, 6, 28, 28, 16, 1),
    (1, 9, 33, 70, 13, 1),            # rows of 18 tiles
    (2, 20, 6, 40, 33, (0, 2)),       # unequal padding
    (2, 7, 10, 11, 9, ((0, 2), (1, 0))),  # per-side padding
    (3, 8, 2, 3, 5, ((2, 1), (2, 2))),
    (1, 4, 3, 3, 2, 0),               # a single output
    (2, 32, 56, 56, 24, 1),           # shape e's geometry, fewer channels
]


@pytest.fixture
def wino():
    previous = F.set_winograd(True)
    yield
    F.set_winograd(previous)


def _close(got, want, what):
    assert got.dtype == np.float32 and got.shape == want.shape, what
    err = np.abs(got.astype(np.float64) - want).max()
    scale = np.abs(want).max()
    assert err <= WINO3_ATOL * scale, f"{what}: max error {err:.3g} > {WINO3_ATOL} * {scale:.3g}"


def _sides(pad):
    """((top, bottom), (left, right)) of every padding form the cases use."""
    if isinstance(pad, int):
        return (pad, pad), (pad, pad)
    if isinstance(pad[0], int):
        return (pad[0], pad[0]), (pad[1], pad[1])
    return tuple(pad)


def _oracle(x, wt, b, gy_shape_rng, pad):
    """float64 y, grad_x, grad_w, grad_b through the oracle on an explicitly
    padded input (the oracle takes symmetric padding only)."""
    (t, bo), (l, r) = _sides(pad)
    xp = np.pad(x, ((0, 0), (0, 0), (t, bo), (l, r)))
    y = oracle.conv2d(xp, wt, b)
    gy = gy_shape_rng.standard_normal(y.shape)
    gxp, gw, gb = oracle.conv2d_backward(gy, xp, wt)
    gx = gxp[:, :, t:t + x.shape[2], l:l + x.shape[3]]
    return y, gy, gx, gw, gb


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_winograd3_matches_float64_oracle(case, simd, wino, rng):
    n, c, h, w, k, pad = case
    x = rng.standard_normal((n, c, h, w))
    wt = rng.standard_normal((k, c, 3, 3))
    b = rng.standard_normal(k)
    want_y, gy, want_gx, want_gw, want_gb = _oracle(x, wt, b, rng, pad)
    f = np.float32
    y = F.conv2d(x.astype(f), wt.astype(f), b.astype(f), padding=pad)
    assert F.info()["last_conv_algorithm"]["forward"] == "winograd"
    _close(y, want_y, "y")
    gx, gw, gb = F.conv2d_backward(gy.astype(f), x.astype(f), wt.astype(f), padding=pad)
    algo = F.info()["last_conv_algorithm"]
    assert (algo["grad_input"], algo["grad_weight"]) == ("winograd", "winograd")
    _close(gx, want_gx, "grad_x")
    _close(gw, want_gw, "grad_w")
    _close(gb, want_gb, "grad_b")


def test_winograd3_matches_plain_loop_reference(wino, rng):
    x = rng.standard_normal((2, 3, 7, 6))
    wt = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    f = np.float32
    want = R.conv2d(x, wt, b, padding=1)
    _close(F.conv2d(x.astype(f), wt.astype(f), b.astype(f), padding=1), want, "y")
    gy = rng.standard_normal(want.shape)
    want_gx = R.conv2d_backward(gy, x, wt, padding=1)[0]
    got_gx = F.conv2d_backward(gy.astype(f), x.astype(f), wt.astype(f), padding=1)[0]
    _close(got_gx, want_gx, "grad_x")


def test_winograd3_options_match_direct_semantics(wino, rng):
    """No bias, fused ReLU (the same bits then max(., 0)), relu_output masking and out=."""
    f = np.float32
    x = rng.standard_normal((2, 16, 9, 11)).astype(f)
    wt = rng.standard_normal((18, 16, 3, 3)).astype(f)
    y = F.conv2d(x, wt, None, padding=1)
    _close(y, oracle.conv2d(x, wt, None, padding=1), "y without bias")
    out = np.full(y.shape, np.nan, dtype=f)
    yr = F.conv2d(x, wt, None, padding=1, activation="relu", out=out)
    assert yr is out
    np.testing.assert_array_equal(yr, np.maximum(y, 0))
    gy = rng.standard_normal(y.shape).astype(f)
    masked = np.where(yr > 0, gy, 0).astype(f)
    ref = F.conv2d_backward(masked, x, wt, padding=1)
    got = F.conv2d_backward(gy, x, wt, padding=1, relu_output=yr)
    for a, b_ in zip(got, ref):
        np.testing.assert_array_equal(a, b_)


@pytest.mark.skipif(not fastconv.openmp_enabled(), reason="a serial build has one thread")
def test_winograd3_1_and_2_threads_bitwise_equal(wino, rng, restore_threads):
    """Fixed tile blocks and grad-weight chunks: any thread count, same bits
    (shape e at batch 4)."""
    f = np.float32
    x = rng.standard_normal((4, 64, 56, 56)).astype(f)
    wt = rng.standard_normal((64, 64, 3, 3)).astype(f)
    b = rng.standard_normal(64).astype(f)
    gy = rng.standard_normal((4, 64, 56, 56)).astype(f)
    res = []
    for nt in (1, 2):
        fastconv.set_num_threads(nt)
        y = F.conv2d(x, wt, b, padding=1, activation="relu")
        res.append((y,) + F.conv2d_backward(gy, x, wt, padding=1, relu_output=y))
        assert fastconv.info()["team"]["threads_last_call"] == nt
    assert F.info()["last_conv_algorithm"]["grad_weight"] == "winograd"
    for a, b_, what in zip(res[0], res[1], ("y", "grad_x", "grad_w", "grad_b")):
        oracle.assert_bitwise_equal(a, b_, what)


@pytest.mark.parametrize("n, k, hw", [(1, 64, 28), (2, 48, 14), (1, 24, 9)])
@pytest.mark.skipif(not fastconv.openmp_enabled(), reason="a serial build has one thread")
def test_winograd3_small_batches_split_channels_bitwise(wino, rng, restore_threads,
                                                        n, k, hw):
    """Fewer tile blocks than threads: each block's output channels are cut between
    the threads too; 1 and 2 threads still give the same bits."""
    f = np.float32
    x = rng.standard_normal((n, 32, hw, hw)).astype(f)
    wt = rng.standard_normal((k, 32, 3, 3)).astype(f)
    b = rng.standard_normal(k).astype(f)
    res = []
    for nt in (1, 2):
        fastconv.set_num_threads(nt)
        y = F.conv2d(x, wt, b, padding=1, activation="relu")
        gy = np.ascontiguousarray(np.cos(np.arange(y.size, dtype=f)).reshape(y.shape))
        assert fastconv.info()["team"]["threads_last_call"] == nt
        res.append((y, F.conv2d_backward(gy, x, wt, padding=1, relu_output=y)[0]))
    for a, b_, what in zip(res[0], res[1], ("y", "grad_x")):
        oracle.assert_bitwise_equal(a, b_, what)


W, D = "winograd", "direct"


@pytest.mark.parametrize("shape, k, kw, expect", [
    ((32, 64, 56, 56), 64, {}, (W, W, W)),            # bench shape e: 2.0x / 2.4x / 1.5x
    ((64, 16, 28, 28), 32, {}, (W, W, D)),            # grad-weight wants >= 32 of each
    ((32, 32, 28, 28), 32, {}, (W, W, W)),            # grad-weight 1.3x
    ((64, 32, 14, 14), 64, {}, (W, W, D)),            # grad-weight wants >= 49 tiles an image
    ((16, 128, 28, 28), 128, {}, (W, W, D)),          # grad-weight wants <= 64 of each
    ((1, 128, 14, 14), 128, {}, (W, W, D)),           # the rule ignores the batch
    ((64, 16, 14, 14), 16, {}, (W, W, D)),            # a tie
    ((64, 64, 7, 7), 64, {}, (D, D, D)),              # 4 tiles an image: 0.46x at batch 1
    ((8, 32, 12, 12), 32, {}, (D, D, D)),             # 9 tiles an image
    ((32, 3, 32, 32), 16, {}, (D, D, D)),             # a first layer: 0.8x
    ((64, 8, 28, 28), 32, {}, (D, D, D)),             # 8 input channels: 0.84x
    ((64, 16, 28, 28), 8, {}, (D, D, D)),             # 8 output channels
    ((8, 32, 14, 14), 32, dict(stride=2), (D, D, D)),
    ((8, 32, 28, 28), 32, dict(dilation=2), (D, D, D)),
    ((8, 32, 28, 28), 32, dict(groups=2), (D, D, D)),
    ((8, 32, 28, 28), 32, dict(padding=3), (D, D, D)),  # grad-input needs padding <= 2
    ((8, 32, 28, 28), 32, dict(padding=((0, 3), (1, 1))), (D, D, D)),
    ((8, 32, 28, 28), 32, dict(padding="same"), (W, W, W)),
    ((8, 32, 28, 28), 32, dict(padding="valid"), (W, W, W)),
    ((8, 32, 28, 28), 32, dict(dtype=np.float64), (D, D, D)),
])
def test_winograd3_dispatch_auto(shape, k, kw, expect, rng):
    previous = F.set_winograd(None)
    try:
        dtype = kw.pop("dtype", np.float32)
        groups = kw.get("groups", 1)
        args = dict(padding=1)
        args.update(kw)
        x = rng.standard_normal(shape).astype(dtype)
        wt = rng.standard_normal((k, shape[1] // groups, 3, 3)).astype(dtype)
        y = F.conv2d(x, wt, None, **args)
        F.conv2d_backward(np.ones_like(y), x, wt, **args)
        algo = F.info()["last_conv_algorithm"]
        assert (algo["forward"], algo["grad_input"], algo["grad_weight"]) == expect
    finally:
        F.set_winograd(previous)


def test_winograd3_rule_counts_whole_tiles_of_one_image():
    """The auto rule counts an image's 4x4 tiles, each side rounded up, and never
    the batch (so predict's rows do not depend on its batch_size)."""
    previous = F.set_winograd(None)
    try:
        def ok(n, h, w):
            geom = ConvGeom("t", (n, 32, h, w), (32, 32, 3, 3), 1, 1, 1, 1)
            return _routes.winograd_ok(geom, np.float32)
        assert ok(1, 13, 13) and ok(1, 16, 16) and ok(1, 4, 64) and ok(300, 13, 13)
        assert not ok(1, 12, 12) and not ok(300, 12, 12) and not ok(64, 13, 12)
    finally:
        F.set_winograd(previous)


def _pool_net(rng, c=16, k=32):
    kw = {"rng": rng, "dtype": np.float32}
    return nn.Sequential([
        nn.Conv2d(c, k, 3, padding=1, **kw),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(k, k, 3, padding=0, **kw),  # odd output (15 - 2 = 13): an edge row in no window
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(k * 6 * 6, 10, **kw),
    ])


def _layer_path(model, x):
    was = model.training
    model.eval()
    try:
        with nn.no_grad():
            return model._forward(x).copy()
    finally:
        model.train(was)


@pytest.mark.parametrize("mode", [True, None])
def test_winograd3_inference_plan_is_bitwise_the_layers(mode, rng):
    """predict / evaluation-mode forward run the plan: both 3x3 convs (forced, and
    chosen by the auto rule at this batch) are Winograd steps fused with their
    2x2 max-pool (OP_WINO_POOL on the kept, packed U), which must give the bits
    of conv (+ReLU) then max_pool2d layer by layer."""
    previous = F.set_winograd(mode)
    try:
        model = _pool_net(np.random.default_rng(3)).eval()
        x = rng.standard_normal((16, 16, 30, 30)).astype(np.float32)
        want = _layer_path(model, x)
        assert F.info()["last_conv_algorithm"]["forward"] == "winograd"
        plan = InferencePlan(model, x.shape, x.dtype)
        assert [s.op_code for s in plan.steps if isinstance(s, _Conv)] == [_kernels.OP_WINO] * 2
        assert plan._unused == [0, 2]  # both convs' outputs pooled in the conv op
        assert model.forward(x).tobytes() == want.tobytes()
        # predict: the plan in batches, then logits to probabilities
        probs = _probabilities(model, want.copy())
        assert model.predict(x).tobytes() == probs.tobytes()
        assert model.predict(x, batch_size=5).tobytes() == probs.tobytes()
        F.set_winograd(False)
        direct = model.forward(x)
        assert not np.array_equal(direct, want)  # the plan really ran Winograd
        np.testing.assert_allclose(want, direct, rtol=1e-3, atol=1e-3)
    finally:
        F.set_winograd(previous)


def _special(rng, shape):
    """Normal values with -0.0, +-inf and NaNs of different payloads and signs."""
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, size=min(flat.size, 6), replace=False)
    nans = np.array([0x7FC00001, 0xFFC00002, 0x7FC00003], np.uint32).view(np.float32)
    flat[idx] = np.resize(np.concatenate([nans, np.array([-0.0, np.inf, -np.inf], np.float32)]),
                          idx.size)
    return x


@pytest.mark.parametrize("relu", [False, True])
def test_winograd3_pool_is_bitwise_winograd_then_pool(simd, wino, relu):
    """The fused conv + 2x2/2 max-pool op: a 4x4 tile holds 2x2 windows. Odd
    heights and widths (a cut window is in no output), outputs smaller than a
    tile, narrow rows (in pairs, also across images) and wide ones (several
    lane groups), batches of 1-3, the weights transformed on the call and kept
    packed (variants 0 and 1), NaN, inf and -0.0, 1 and 2 threads."""
    rng = np.random.default_rng(7)
    for ho, wo in [(2, 2), (3, 5), (5, 3), (6, 6), (7, 7), (14, 14), (9, 17), (4, 70),
                   (13, 40), (11, 2)]:
        for n in (1, 2, 3):
            x = _special(rng, (n, 3, ho, wo))
            w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
            b = None if (ho + wo) % 4 == 0 else rng.standard_normal(5).astype(np.float32)
            kernel, geom, out_shape = F._conv2d_prepared(x.shape, np.float32, w.shape, 1, 1, 1, 1)
            assert kernel is _kernels.conv2d_forward_winograd
            up = np.empty(_kernels.winograd_packed_len(geom), np.float32)
            _kernels.winograd_weights(w, 1, up[:36 * 15].reshape(36, 5, 3))
            _kernels.winograd_pack(up, geom)
            pooled = out_shape[:2] + (out_shape[2] // 2, out_shape[3] // 2)
            pool_geom = out_shape + (2, 2, ho // 2, wo // 2, 2, 2, 0, 0, 0, 0, 1, 1)
            y = np.empty(out_shape, np.float32)
            for variant, wt in ((0, w), (1, up)):
                for nt in (1, 2):
                    want = np.full(pooled, 7, np.float32)
                    got = np.full(pooled, 7, np.float32)
                    arrays = [x, y, want, got, wt, b]
                    conv = (_kernels.OP_WINO, False, 0, 1, 4, 5, relu, geom, None)
                    pool = (_kernels.OP_MAXPOOL, False, 1, 2, -1, -1, False, pool_geom, False)
                    fused = (_kernels.OP_WINO_POOL, False, 0, 3, 4, 5, relu, geom, None)
                    _kernels.PlanProgram([conv, pool], 6).run(arrays, [variant, 0], nt)
                    _kernels.PlanProgram([fused], 6).run(arrays, [variant], nt)
                    assert got.tobytes() == want.tobytes(), (ho, wo, n, variant, nt)
                    np.testing.assert_array_equal(
                        y, F.conv2d(x, w, b, padding=1, activation="relu" if relu else None))


def test_winograd3_non_finite_inputs(rng):
    """A NaN input poisons every output whose 3x3 window holds it, and may spread to
    the other outputs of the 4x4 tiles whose 6x6 input patch holds it (unlike
    F(2x2, 5x5): an inner patch column feeds transform points that every row of
    A^T reads), never further."""
    f = np.float32
    x = rng.standard_normal((1, 16, 11, 11)).astype(f)
    wt = rng.standard_normal((32, 16, 3, 3)).astype(f)
    window = np.zeros((1, 32, 11, 11), bool)
    window[:, :, 3:6, 4:7] = True  # |oh - 4| <= 1, |ow - 5| <= 1
    # padded (pad 1) position (5, 6): tile rows 0-1 (patch rows 0..5, 4..9) and
    # tile column 1 (patch columns 4..9)
    tiles = np.zeros((1, 32, 11, 11), bool)
    tiles[:, :, 0:8, 4:8] = True
    previous = F.set_winograd(True)
    try:
        xb = x.copy()
        xb[0, 3, 4, 5] = np.nan
        y = F.conv2d(xb, wt, padding=1)
        assert F.info()["last_conv_algorithm"]["forward"] == "winograd"
        bad = ~np.isfinite(y)
        assert bad[window].all() and not bad[~tiles].any()
    finally:
        F.set_winograd(previous)


@pytest.mark.parametrize("shape", [(4, 2, 7, 7), (4, 2, 1, 1), (4, 2, 3, 5)])
def test_winograd_weights_refuses_other_kernel_sizes(shape):
    """The weight transform knows 5x5 and 3x3 only: any other size would be read
    as 5x5 (past the end of a smaller array), so the wrapper says so."""
    w = np.zeros(shape, np.float32)
    u = np.empty((36, 4, 2), np.float32)
    with pytest.raises(ValueError, match="winograd_weights: expects 5x5 or 3x3 weights, got"):
        _kernels.winograd_weights(w, 1, u)


@pytest.mark.skipif(not fastconv.openmp_enabled(), reason="a serial build has one thread")
def test_winograd3_training_1_and_2_threads_bitwise(restore_threads):
    """fit on a model whose second conv takes F(4x4, 3x3) in all three passes by the
    auto rule (32 -> 32 channels, 28x28): the same parameters and predictions at
    1 and 2 threads."""
    geom = ConvGeom("t", (32, 32, 28, 28), (32, 32, 3, 3), 1, 1, 1, 1)
    assert _routes.winograd_ok(geom, np.float32)
    assert _routes.winograd_ok(geom, np.float32, grad_weight=True)
    previous = F.set_winograd(None)
    try:
        res = []
        for nt in (1, 2):
            fastconv.set_num_threads(nt)
            rng = np.random.default_rng(0)
            kw = {"rng": np.random.default_rng(5), "dtype": np.float32}
            model = nn.Sequential([
                nn.Conv2d(1, 32, 3, padding=1, **kw), nn.ReLU(),
                nn.Conv2d(32, 32, 3, padding=1, **kw), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(32 * 14 * 14, 10, **kw)])
            x = rng.random((64, 1, 28, 28)).astype(np.float32)
            y = rng.integers(0, 10, 64)
            model.compile(optimizer="adam", loss="cross_entropy")
            model.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
            res.append([p.data.copy() for p in model.parameters()] + [model.predict(x[:7])])
        for i, (a, b) in enumerate(zip(*res)):
            oracle.assert_bitwise_equal(a, b, f"array {i}")
    finally:
        F.set_winograd(previous)
