"""The inference plan of ``Sequential`` (``fastconv/nn/plan.py``).

``predict`` / ``evaluate`` / evaluation-mode ``forward`` run a plan built once
per input shape and dtype. Checked here: bitwise the layer-by-layer forward
for every layer type; batch invariance (a sample's output does not depend on
its batch or its place in it) for the package's models in float32 and
float64; parameters read live; rebuilds when layers change; the layers' own
error messages; evaluation-mode forward keeps nothing for backward.
"""

import numpy as np
import pytest

import fastconv
from fastconv import _kernels
from fastconv import functional as F
from fastconv import models, nn
from fastconv.nn.plan import InferencePlan, plannable

from conftest import SIMD_LEVELS

DTYPES = [np.float32, np.float64]


def layer_path(model, x):
    """The evaluation-mode forward through the layers (what the plan replaces)."""
    was = model.training
    model.eval()
    try:
        with nn.no_grad():
            return model._forward(x).copy()
    finally:
        model.train(was)


def every_layer_net(dtype, seed=0):
    """One of each layer the plan knows, in the places that change what it does:
    ReLU first (its input is the caller's), a strided / dilated / grouped conv,
    'same' with an even kernel, both pools with padding, both batch norms (with
    non-trivial running statistics), a nested Sequential, dropout, a Linear
    without bias and every activation."""
    rng = np.random.default_rng(seed)
    kw = {"rng": rng, "dtype": dtype}
    bn2, bn1 = nn.BatchNorm2d(6, dtype=dtype), nn.BatchNorm1d(24, dtype=dtype, affine=False)
    for bn in (bn2, bn1):
        bn.running_mean[:] = rng.standard_normal(bn.num_features)
        bn.running_var[:] = rng.uniform(0.5, 2.0, bn.num_features)
    bn2.weight.data[:] = rng.uniform(0.5, 1.5, 6)
    bn2.bias.data[:] = rng.standard_normal(6)
    return nn.Sequential([
        nn.ReLU(),
        nn.Conv2d(2, 6, 3, stride=(1, 2), padding=2, dilation=2, groups=2, **kw),
        bn2,
        nn.ReLU(),
        nn.Conv2d(6, 6, 4, padding="same", **kw),
        nn.Tanh(),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Sequential([nn.Conv2d(6, 4, 1, **kw), nn.ReLU(), nn.AvgPool2d(2, padding=1,
                                                                          count_include_pad=False)]),
        nn.Flatten(),
        nn.Dropout(0.5, rng=1),
        nn.Linear(4 * 4 * 3, 24, bias=False, **kw),
        bn1,
        nn.Sigmoid(),
        nn.Linear(24, 5, **kw),
        nn.Softmax(),
    ])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("build", [models.lenet5, models.mnist_cnn, every_layer_net],
                         ids=["lenet5", "mnist_cnn", "every_layer"])
def test_plan_is_bitwise_the_layer_forward(build, dtype, rng):
    model = build(seed=0, dtype=dtype)
    shape = (5, 2, 11, 13) if build is every_layer_net else (5, 1, 28, 28)
    x = rng.standard_normal(shape).astype(dtype)
    assert plannable(model)
    want = layer_path(model, x)
    model.eval()
    got = model.forward(x)
    assert got.dtype == dtype and got.tobytes() == want.tobytes()
    # evaluation mode regardless of the flags: predict and evaluate leave them alone
    model.train()
    np.testing.assert_array_equal(model.predict(x), model.predict(x, batch_size=2))
    assert model.training and all(m.training for m in model.modules())


def test_every_layer_type_is_in_the_plan():
    """The test net above really exercises every step type of the plan."""
    plan = InferencePlan(every_layer_net(np.float32), (2, 2, 11, 13), np.float32)
    kinds = {type(s).__name__ for s in plan.steps}
    assert kinds == {"_Relu", "_Conv", "_BatchNorm", "_Activation", "_MaxPool", "_AvgPool",
                     "_Reshape", "_Identity", "_Linear"}
    # the first ReLU must not write into the caller's array
    assert plan.steps[0].kind == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("build", [models.lenet5, models.mnist_cnn], ids=["lenet5", "mnist_cnn"])
def test_predict_rows_do_not_depend_on_the_batch(build, dtype):
    """Regression: predict in chunks of 1,000 differed from one call on 16 of
    10,000 rows, because nn.Linear switched between NumPy's BLAS and fastconv's
    GEMM by batch size (and the GEMM's blocking followed the batch size)."""
    rng = np.random.default_rng(7)
    model = build(seed=1, dtype=dtype)
    x = rng.standard_normal((300, 1, 28, 28)).astype(dtype)
    full = model.predict(x, batch_size=300)
    logits = (model.eval(), model.forward(x))[1]
    for b in (1, 7, 64, 100, 256):
        assert model.predict(x, batch_size=b).tobytes() == full.tobytes(), f"batch_size={b}"
    for n in (1, 2, 3, 5, 16, 33, 64):
        for start in rng.integers(0, 300 - n + 1, size=3):
            sl = slice(start, start + n)
            assert model.predict(x[sl]).tobytes() == full[sl].tobytes(), (n, start)
            assert model.forward(x[sl]).tobytes() == logits[sl].tobytes(), (n, start)


def test_one_and_two_threads_agree(rng, restore_threads):
    model = models.mnist_cnn(seed=0)
    x = rng.standard_normal((9, 1, 28, 28)).astype(np.float32)
    fastconv.set_num_threads(1)
    one = model.predict(x)
    fastconv.set_num_threads(2)
    assert model.predict(x).tobytes() == one.tobytes()


def test_parameters_are_read_live(rng):
    """In-place updates, load_state_dict, fit and a replaced array are all seen."""
    model = models.lenet5(seed=0)
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 4)
    before = model.predict(x)
    model.layers[0].weight.data *= 2
    model.layers[-1].bias.data += 1
    after = model.predict(x)
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, model.predict(x, batch_size=1))
    model.eval()
    assert model.forward(x).tobytes() == layer_path(model, x).tobytes()
    model.load_state_dict(models.lenet5(seed=3).state_dict())
    assert model.forward(x).tobytes() == models.lenet5(seed=3).eval().forward(x).tobytes()
    model.compile("sgd", "cross_entropy")
    model.fit(x, y, batch_size=2, verbose=0)
    model.eval()
    assert model.forward(x).tobytes() == layer_path(model, x).tobytes()
    # a new array of the same shape (not in place), and a non-contiguous one
    lin = model.layers[-1]
    lin.weight.data = rng.standard_normal(lin.weight.data.shape).astype(np.float32)
    assert model.forward(x).tobytes() == layer_path(model, x).tobytes()
    lin.weight.data = np.asfortranarray(lin.weight.data)
    assert model.forward(x).tobytes() == layer_path(model, x).tobytes()


def test_plans_follow_changes_to_the_layers(rng):
    model = models.lenet5(seed=0).eval()
    x = rng.standard_normal((3, 1, 28, 28)).astype(np.float32)
    assert model.forward(x).shape == (3, 10)
    model.layers[-1] = nn.Linear(84, 4)
    assert model.forward(x).shape == (3, 4)
    model.add(nn.Linear(4, 2))
    out = model.forward(x)
    assert out.shape == (3, 2) and out.tobytes() == layer_path(model, x).tobytes()
    del model.layers[-1]
    assert model.forward(x).shape == (3, 4)
    # a nested model edited in place
    inner = nn.Sequential([nn.Linear(4, 3)])
    model.add(inner)
    assert model.forward(x).shape == (3, 3)
    inner.add(nn.ReLU())
    inner.add(nn.Linear(3, 6))
    assert model.forward(x).shape == (3, 6)
    # a parameter replaced by one of another shape, with the layer changed to match
    lin = model.layers[7]
    lin.out_features = 100
    lin.weight = nn.Parameter(rng.standard_normal((100, 400)).astype(np.float32))
    lin.bias = nn.Parameter(np.zeros(100, np.float32))
    model.layers[9] = nn.Linear(100, 84)
    out = model.forward(x)
    assert out.tobytes() == layer_path(model, x).tobytes()


def test_plan_cache_is_bounded(rng):
    from fastconv.nn.sequential import _MAX_PLANS

    model = models.lenet5(seed=0).eval()
    for n in range(1, _MAX_PLANS + 5):
        model.forward(rng.standard_normal((n, 1, 28, 28)).astype(np.float32))
    assert len(model._plans) <= _MAX_PLANS


def test_winograd_setting_is_part_of_the_plan(rng):
    model = models.mnist_cnn(seed=0).eval()
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    previous = F.set_winograd(False)
    try:
        direct = model.forward(x)
        assert direct.tobytes() == layer_path(model, x).tobytes()
        F.set_winograd(True)
        wino = model.forward(x)
        assert wino.tobytes() == layer_path(model, x).tobytes()
        F.set_winograd(False)
        assert model.forward(x).tobytes() == direct.tobytes()
        assert not np.array_equal(direct, wino)  # the two algorithms round differently
        np.testing.assert_allclose(wino, direct, rtol=1e-3, atol=1e-3)
    finally:
        F.set_winograd(previous)


@pytest.mark.parametrize("bad, exc, match", [
    (np.zeros((2, 1, 28, 28), np.float64), TypeError, "Conv2d: expected input of dtype float32"),
    (np.zeros((2, 3, 28, 28), np.float32), ValueError, "Conv2d: expected input with 1 channels"),
    (np.zeros((2, 28, 28), np.float32), ValueError, "Conv2d: expected 4-D input"),
    (np.zeros((2, 1, 3, 3), np.float32), ValueError, "max_pool2d|conv2d"),
    (np.zeros((2, 1, 32, 32), np.float32), ValueError, r"Linear: expected input of shape \(N, 400\)"),
])
def test_bad_input_gets_the_layers_messages(bad, exc, match):
    model = models.lenet5(seed=0).eval()
    with pytest.raises(exc, match=match):
        model.forward(bad)
    with pytest.raises(exc, match=match):
        layer_path(model, bad)


def test_eval_forward_keeps_nothing_for_backward(rng):
    model = models.lenet5(seed=0)
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    g = np.ones((2, 10), np.float32)
    model.forward(x)
    model.backward(g)  # training mode: fine
    model.eval()
    model.forward(x)  # through the plan: the caches of the training pass are not of it
    with pytest.raises(RuntimeError, match="without a preceding forward pass"):
        model.backward(g)
    # gradients in evaluation mode (saliency maps) go through the layers
    model.needs_input_grad = True
    model.forward(x)
    gx = model.backward(g)
    assert gx.shape == x.shape and np.any(gx != 0)


def test_a_layer_left_in_training_mode_still_acts(rng):
    """Dropout switched to training inside an eval model drops in forward;
    predict is evaluation mode throughout, as before."""
    model = models.mnist_cnn(seed=0).eval()
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    clean = model.forward(x)
    model.layers[9].train()
    assert not np.array_equal(model.forward(x), clean)
    np.testing.assert_array_equal(model.predict(x), nn.Sequential.predict(models.mnist_cnn(seed=0), x))


class Doubler(nn.Module):
    """A custom layer the plan does not know."""

    def forward(self, x):
        self._y = x * 2
        return self._y

    def backward(self, g):
        return g * 2


def test_models_with_custom_layers_run_through_the_layers(rng):
    layers = [nn.Flatten(), nn.Linear(16, 8, rng=0), Doubler(), nn.Linear(8, 3, rng=1)]
    model = nn.Sequential(layers)
    assert not plannable(model)
    x = rng.standard_normal((5, 1, 4, 4)).astype(np.float32)
    want = layer_path(model, x)
    np.testing.assert_array_equal(model.eval().forward(x), want)
    np.testing.assert_array_equal(model.predict(x, batch_size=2), model.predict(x))
    # a subclass of a known layer is not assumed to compute the same
    class Conv(nn.Conv2d):
        pass
    assert not plannable(nn.Sequential([Conv(1, 2, 3)]))


def test_empty_batch_and_odd_inputs(rng):
    model = models.lenet5(seed=0).eval()
    assert model.forward(np.zeros((0, 1, 28, 28), np.float32)).shape == (0, 10)
    x = rng.standard_normal((6, 1, 28, 28)).astype(np.float32)
    want = model.forward(x)
    np.testing.assert_array_equal(model.forward(x[::-1][::-1]), want)
    np.testing.assert_array_equal(model.forward(np.asfortranarray(x)), want)
    ro = x.copy()
    ro.flags.writeable = False
    np.testing.assert_array_equal(model.forward(ro), want)
    # predict converts other dtypes and layouts to the model's
    np.testing.assert_array_equal(model.predict(x.astype(np.float64)), model.predict(x))


def test_forward_results_are_the_callers(rng):
    """Each call returns a fresh array: a later call does not overwrite it."""
    model = models.lenet5(seed=0).eval()
    a = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    ya = model.forward(a)
    keep = ya.copy()
    model.forward(a + 1)
    np.testing.assert_array_equal(ya, keep)


def test_predict_follows_a_change_of_dtype(rng):
    """predict converts inputs to the model's dtype, which it caches per layer list."""
    model = models.lenet5(seed=0)
    x = rng.standard_normal((3, 1, 28, 28))
    assert model.predict(x).dtype == np.float32
    model.layers = models.lenet5(seed=0, dtype=np.float64).layers
    p = model.predict(x)
    assert p.dtype == np.float64
    np.testing.assert_allclose(p, models.lenet5(seed=0).predict(x), rtol=1e-4, atol=1e-6)


# -- the k-major weight copy of a plan's Linear (few rows) ---------------------

def _kmajor_steps(model, n):
    """The plan's Linear steps for ``n`` rows (built by a predict first)."""
    model.predict(np.zeros((n, 1, 28, 28), model.dtype))
    plan = model._plans[next(k for k in model._plans if k[0][0] == n)]
    return [s for s in plan.steps if type(s).__name__ == "_Linear"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_kmajor_linear_is_bitwise_the_gemm(dtype, simd, rng):
    """linear_forward_kmajor against gemm on W itself, at every SIMD level, for
    widths that do and do not fill the kernels' tiles, with and without bias,
    at 1-64 rows and 1 / 2 threads (the reduction blocks of 2048 cut 3136)."""
    from fastconv import _kernels
    pad = _kernels.KMAJOR_PAD
    for nin, nout in [(3136, 1024), (400, 120), (84, 10), (5, 3), (2049, 129)]:
        w = rng.standard_normal((nout, nin)).astype(dtype)
        b = rng.standard_normal(nout).astype(dtype)
        wt = np.zeros((nin, -(-nout // pad) * pad), dtype)
        wt[:, :nout] = w.T
        x = rng.standard_normal((64, nin)).astype(dtype)
        for bias in (b, None):
            full = np.empty((64, nout), dtype)
            _kernels.gemm(False, True, x, w, bias, F._BIAS_COLS, False, 1, full)
            for n in (1, 2, 3, 16, 17, 64):
                for nt in (1, 2):
                    got = np.empty((n, nout), dtype)
                    _kernels.linear_forward_kmajor(x[:n], wt, bias, nt, got)
                    assert got.tobytes() == full[:n].tobytes(), (nin, nout, n, nt)



@pytest.mark.parametrize("dtype", DTYPES)
def test_panels_linear_is_bitwise_the_gemm(dtype, simd, rng):
    """linear_forward_panels (one row, W in panels of KMAJOR_PAD outputs) against
    gemm on W itself, at every SIMD level, for widths that fill the register
    tile, leave a partial panel or a few columns, with and without bias, at
    1 / 2 threads (the reduction blocks of 2048 cut 3136 and 2049)."""
    from fastconv.nn.plan_steps import _panels_copy
    for nin, nout in [(3136, 1024), (400, 120), (84, 10), (5, 3), (2049, 129), (7, 300)]:
        w = rng.standard_normal((nout, nin)).astype(dtype)
        b = rng.standard_normal(nout).astype(dtype)
        wp = _panels_copy(w)
        x = rng.standard_normal((1, nin)).astype(dtype)
        for bias in (b, None):
            want = np.empty((1, nout), dtype)
            _kernels.gemm(False, True, x, w, bias, F._BIAS_COLS, False, 1, want)
            for nt in (1, 2):
                got = np.full(nout, np.nan, dtype)
                _kernels.linear_forward_panels(x[0], wp, bias, nt, got)
                assert got.tobytes() == want[0].tobytes(), (nin, nout, nt)

def test_kmajor_copy_is_used_and_kept(rng):
    model = models.mnist_cnn(seed=0)
    x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
    steps = _kmajor_steps(model, 1)
    assert steps and all(s.fast is not None for s in steps)
    assert [s.variant for s in steps] == [_kernels.LINEAR_PANELS] * 2
    model.predict(x)
    copies = [s.wd for s in steps]
    assert all(c is not None for c in copies)
    model.predict(x)
    assert all(s.wd is c for s, c in zip(steps, copies)), "copied again without a change"
    want = layer_path(model, x)
    model.eval()
    assert model.forward(x).tobytes() == want.tobytes()


def _check_follows(model, x, change):
    """``change(model)`` between two predicts on ``x``: the second is the layer path's."""
    model.eval()
    model.forward(x)
    change(model)
    got = model.forward(x).copy()
    assert got.tobytes() == layer_path(model, x).tobytes()
    return got


def test_kmajor_copy_follows_in_place_edits(rng):
    """Every way of changing a Linear weight without replacing the array."""
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    model = models.lenet5(seed=0)
    lin = [m for m in model.layers if isinstance(m, nn.Linear)]
    before = model.predict(x).copy()

    def scale(m):
        lin[0].weight.data *= 2

    def assign(m):
        lin[1].weight.data[3, :] = 0.5

    held = lin[2].weight.data  # a reference kept across predicts

    def through_held(m):
        held[:] = -held

    view = lin[2].weight.data[1:]

    def through_view(m):
        view[...] = 0.25

    for change in (scale, assign, through_held, through_view):
        _check_follows(model, x, change)
    assert not np.array_equal(before, model.predict(x))
    del held, view
    _check_follows(model, x, lambda m: None)  # and the copy is usable again
    steps = _kmajor_steps(model, 2)
    assert all(s.wd is not None for s in steps)


def test_kmajor_copy_follows_optimiser_steps_and_loading(rng):
    x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 1)
    for opt in ("sgd", "adam"):
        model = models.lenet5(seed=0)
        model.compile(opt, "cross_entropy")
        first = model.eval().forward(x).copy()
        model.fit(np.repeat(x, 4, 0), np.repeat(y, 4), batch_size=2, epochs=1, verbose=0)
        got = model.eval().forward(x)
        assert not np.array_equal(first, got)
        assert got.tobytes() == layer_path(model, x).tobytes(), opt
    model = models.lenet5(seed=0)
    model.predict(x)
    model.load_state_dict(models.lenet5(seed=5).state_dict())
    assert model.predict(x).tobytes() == models.lenet5(seed=5).predict(x).tobytes()
    # an optimiser stepped by hand, the arrays shared with a second model
    model = models.lenet5(seed=0)
    opt = fastconv.optim.SGD(model.parameters(), lr=0.1)
    model.predict(x)
    for p in model.parameters():
        p.grad[...] = 1
    opt.step()
    assert model.eval().forward(x).tobytes() == layer_path(model, x).tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
def test_kmajor_rows_match_big_batches(dtype):
    """A sample's output at 1 row (k-major copy) is its output at 64 and 256 rows."""
    rng = np.random.default_rng(3)
    model = models.mnist_cnn(seed=2, dtype=dtype)
    x = rng.standard_normal((256, 1, 28, 28)).astype(dtype)
    full = model.predict(x, batch_size=256)
    part = model.predict(x[:64], batch_size=64)
    assert part.tobytes() == full[:64].tobytes()
    for i in (0, 17, 63, 255):
        assert model.predict(x[i:i + 1]).tobytes() == full[i:i + 1].tobytes(), i


def test_winograd_weights_kept_by_the_plan(rng, simd):
    """The plan's Winograd conv keeps the weight transform: bitwise the
    transform-per-call kernel, at every SIMD level and batch size, and it
    follows in-place edits of the weight."""
    model = models.mnist_cnn(seed=0)
    convs = []
    for n in (1, 3, 64):
        x = rng.standard_normal((n, 1, 28, 28)).astype(np.float32)
        want = layer_path(model, x)
        model.eval()
        assert model.forward(x).tobytes() == want.tobytes(), n
        plan = model._plans[next(k for k in model._plans if k[0][0] == n)]
        convs = [s for s in plan.steps if type(s).__name__ == "_Conv" and s.pre is not None]
        assert convs and all(s.wd is not None for s in convs), "no Winograd step kept U"
    conv = convs[0].layer
    x = rng.standard_normal((2, 1, 28, 28)).astype(np.float32)
    _check_follows(model, x, lambda m: conv.weight.data.__imul__(0.5))
    kept = conv.weight.data
    _check_follows(model, x, lambda m: kept.__imul__(-1.0))
    del kept



def test_winograd_packing_made_at_another_simd_level_is_not_used(rng):
    """The plan keeps U packed for the SIMD level in force when it made it; the
    kernels' panel height differs between levels, so after a switch the kernel
    must see that the packing does not fit and pack U again (same bits as a
    plan built at the new level)."""
    levels = [lv for lv in ("avx512", "avx2", "generic") if lv in SIMD_LEVELS]
    if len(levels) < 2:
        pytest.skip("one SIMD level on this CPU")
    before = F.simd_level()
    try:
        x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
        for first in levels:
            model = models.mnist_cnn(seed=0)
            model.eval()
            F.set_simd_level(first)
            model.forward(x)                       # packs U for `first`
            for other in levels:
                F.set_simd_level(other)
                got = model.forward(x).copy()
                want = models.mnist_cnn(seed=0).eval().forward(x)   # packed for `other`
                assert got.tobytes() == want.tobytes(), (first, other)
    finally:
        F.set_simd_level(before)


def test_winograd_packing_that_does_not_fit_is_not_made(rng, monkeypatch):
    """A buffer too short for the packing the SIMD level in force chooses (sized
    at another level) gets none: the kernel packs U on each call, same bits."""
    x = rng.standard_normal((1, 1, 28, 28)).astype(np.float32)
    want = models.mnist_cnn(seed=0).eval().forward(x)
    monkeypatch.setattr(_kernels, "winograd_packed_len",
                        lambda geom: 36 * geom[4] * geom[1] + 16)   # U and the header
    model = models.mnist_cnn(seed=0).eval()
    for _ in range(2):
        assert model.forward(x).tobytes() == want.tobytes()

def test_winograd_pre_kernel_is_bitwise_the_kernel(rng, simd):
    from fastconv import _kernels
    x = rng.standard_normal((3, 16, 12, 9)).astype(np.float32)
    w = rng.standard_normal((24, 16, 5, 5)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    for pad in (0, 2):
        kernel, geom, out_shape = F._conv2d_prepared(
            x.shape, np.float32, w.shape, 1, pad, 1, 1)
        u = np.empty((36, 24, 16), np.float32)
        _kernels.winograd_weights(w, 2, u)
        for relu in (False, True):
            for bias in (b, None):
                want = np.empty(out_shape, np.float32)
                got = np.empty(out_shape, np.float32)
                _kernels.conv2d_forward_winograd(x, w, bias, geom, relu, 2, want)
                _kernels.conv2d_forward_winograd_pre(x, u, bias, geom, relu, 1, got)
                assert got.tobytes() == want.tobytes(), (pad, relu)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("build", [models.lenet5, models.mnist_cnn], ids=["lenet5", "mnist_cnn"])
def test_program_is_bitwise_the_steps(build, dtype, rng):
    """The plan's PlanProgram (all kernel calls from C) against its steps run
    one by one from Python, with and without ``out``; afterwards nothing holds
    a weight (the k-major copy and Winograd U stay usable)."""
    from fastconv import _kernels
    model = build(seed=0, dtype=dtype).eval()
    for n in (1, 5):
        x = rng.standard_normal((n, 1, 28, 28)).astype(dtype)
        model.forward(x)
        plan = model._plans[next(k for k in model._plans if k[0] == x.shape)]
        assert plan.program is not None
        with_program = plan.run(x).copy()
        out = np.empty(plan.out_shape, dtype)
        assert plan.run(x, out) is out and out.tobytes() == with_program.tobytes()
        program, plan.program = plan.program, None
        try:
            assert plan.run(x).tobytes() == with_program.tobytes(), n
        finally:
            plan.program = program
        assert with_program.tobytes() == layer_path(model, x).tobytes()
        for layer in model.modules():
            if isinstance(layer, (nn.Linear, nn.Conv2d)):
                assert _kernels.sole_reference(layer.weight, "_data"), layer


def test_plans_without_a_program_still_run(rng):
    """A step with no op (batch norm, sigmoid...) keeps the step-by-step runner."""
    plan = InferencePlan(every_layer_net(np.float32), (2, 2, 11, 13), np.float32)
    assert plan.program is None
