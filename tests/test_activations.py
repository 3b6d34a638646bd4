"""Activations and global/adaptive pooling of fastconv.nn.activations: torch, central differences, save/load."""

import numpy as np
import pytest

from fastconv import nn
from fastconv.nn import activations as A

# float32: GELU/SiLU are computed in float64 and rounded, torch works in float32
# (its tanh-GELU derivative cancels to 0 near x = -5 where ours is 1.4e-6)
TOL = {np.float64: dict(rtol=1e-12, atol=1e-13), np.float32: dict(rtol=1e-5, atol=5e-6)}

# (our layer, torch module factory); inputs avoid the kinks at 0 for the gradient checks
ACTIVATIONS = [
    ("LeakyReLU", lambda: A.LeakyReLU(), lambda t: t.nn.LeakyReLU()),
    ("LeakyReLU-0.2", lambda: A.LeakyReLU(0.2), lambda t: t.nn.LeakyReLU(0.2)),
    ("ELU", lambda: A.ELU(), lambda t: t.nn.ELU()),
    ("ELU-0.5", lambda: A.ELU(alpha=0.5), lambda t: t.nn.ELU(alpha=0.5)),
    ("GELU", lambda: A.GELU(), lambda t: t.nn.GELU()),
    ("GELU-tanh", lambda: A.GELU(approximate="tanh"), lambda t: t.nn.GELU(approximate="tanh")),
    ("SiLU", lambda: A.SiLU(), lambda t: t.nn.SiLU()),
    ("LogSoftmax", lambda: A.LogSoftmax(), lambda t: t.nn.LogSoftmax(dim=1)),
]
IDS = [a[0] for a in ACTIVATIONS]

POOLS = [
    ("GlobalAvgPool2d", lambda: A.GlobalAvgPool2d(keepdims=True),
     lambda t: t.nn.AdaptiveAvgPool2d(1)),
    ("GlobalMaxPool2d", lambda: A.GlobalMaxPool2d(keepdims=True),
     lambda t: t.nn.AdaptiveMaxPool2d(1)),
    ("Adaptive-3x2", lambda: A.AdaptiveAvgPool2d((3, 2)), lambda t: t.nn.AdaptiveAvgPool2d((3, 2))),
    ("Adaptive-5", lambda: A.AdaptiveAvgPool2d(5), lambda t: t.nn.AdaptiveAvgPool2d(5)),
    ("Adaptive-1x1", lambda: A.AdaptiveAvgPool2d(1), lambda t: t.nn.AdaptiveAvgPool2d(1)),
    ("Adaptive-None-2", lambda: A.AdaptiveAvgPool2d((None, 2)),
     lambda t: t.nn.AdaptiveAvgPool2d((None, 2))),
    ("Adaptive-up-9", lambda: A.AdaptiveAvgPool2d(9), lambda t: t.nn.AdaptiveAvgPool2d(9)),
]
POOL_IDS = [p[0] for p in POOLS]


def away_from_zero(rng, shape, scale=3.0):
    x = rng.standard_normal(shape) * scale
    x[np.abs(x) < 1e-3] = 0.5
    return x


def central_diff(layer, x, g, h=1e-6):
    """d(sum(forward(x) * g))/dx by central differences, float64."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        grad[i] = (np.sum(layer.forward(xp) * g) - np.sum(layer.forward(xm) * g)) / (2 * h)
    return grad


def run_torch(torch, module, x, g):
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = module(tx)
    ty.backward(torch.from_numpy(g.copy()).reshape(ty.shape))
    return ty.detach().numpy(), tx.grad.numpy()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,ours,theirs", ACTIVATIONS, ids=IDS)
def test_activation_matches_torch(name, ours, theirs, dtype, rng):
    torch = pytest.importorskip("torch")
    x = away_from_zero(rng, (4, 5, 3, 2)).astype(dtype)
    x[0, 0, 0, :] = [60.0, -60.0]                 # tails: no overflow, no NaN
    layer = ours()
    y = layer.forward(x)
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = layer.backward(g)
    assert y.dtype == gx.dtype == dtype and gx.shape == x.shape
    ty, tgx = run_torch(torch, theirs(torch), x, g)
    np.testing.assert_allclose(y, ty, **TOL[dtype])
    np.testing.assert_allclose(gx, tgx, **TOL[dtype])


@pytest.mark.parametrize("name,ours,theirs", ACTIVATIONS + POOLS, ids=IDS + POOL_IDS)
def test_gradient_by_central_differences(name, ours, theirs, rng):
    layer = ours()
    x = away_from_zero(rng, (2, 3, 6, 5), scale=1.5)   # continuous values: no max-pool ties
    y = layer.forward(x)
    g = rng.standard_normal(y.shape)
    gx = layer.backward(g).copy()
    np.testing.assert_allclose(gx, central_diff(layer, x, g), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(2, 3, 7, 5), (1, 1, 4, 4), (3, 2, 1, 6)])
@pytest.mark.parametrize("name,ours,theirs", POOLS, ids=POOL_IDS)
def test_pool_matches_torch(name, ours, theirs, shape, dtype, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal(shape).astype(dtype)
    layer = ours()
    y = layer.forward(x)
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = layer.backward(g)
    ty, tgx = run_torch(torch, theirs(torch), x, g)
    assert y.shape == ty.shape and y.dtype == dtype
    np.testing.assert_allclose(y, ty, **TOL[dtype])
    np.testing.assert_allclose(gx, tgx, **TOL[dtype])


def test_adaptive_bins_follow_pytorch_rule():
    # H=7 into 3 bins: [0,3), [2,5), [4,7) - floor(i*7/3), ceil((i+1)*7/3)
    assert A._adaptive_bins(7, 3) == [(0, 3), (2, 5), (4, 7)]
    assert A._adaptive_bins(4, 4) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert A._adaptive_bins(2, 3) == [(0, 1), (0, 2), (1, 2)]


def test_global_pools_default_to_keras_shape_and_feed_linear(rng):
    x = rng.standard_normal((4, 6, 5, 5)).astype(np.float32)
    for pool in (A.GlobalAvgPool2d(), A.GlobalMaxPool2d()):
        assert pool.forward(x).shape == (4, 6)
    np.testing.assert_allclose(A.GlobalAvgPool2d().forward(x), x.mean(axis=(2, 3)), rtol=1e-6)
    np.testing.assert_array_equal(A.GlobalMaxPool2d().forward(x), x.max(axis=(2, 3)))


def test_global_max_pool_tie_goes_to_first_pixel():
    x = np.zeros((1, 1, 2, 2))
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = 5.0
    pool = A.GlobalMaxPool2d()
    pool.forward(x)
    gx = pool.backward(np.ones((1, 1)))
    np.testing.assert_array_equal(gx[0, 0], [[0.0, 1.0], [0.0, 0.0]])


def test_layers_train_in_a_sequential_and_survive_save_load(tmp_path, rng):
    model = nn.Sequential([
        nn.Conv2d(1, 4, 3, padding=1), A.GELU(approximate="tanh"), A.AdaptiveAvgPool2d(4),
        nn.Conv2d(4, 4, 3, padding=1), A.LeakyReLU(0.1), A.ELU(0.7), A.SiLU(),
        A.GlobalMaxPool2d(), nn.Linear(4, 3), A.GELU(), A.LogSoftmax(),
    ])
    model.compile(optimizer="adam", loss="nll")
    x = rng.standard_normal((24, 1, 9, 9)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    hist = model.fit(x, y, epochs=3, batch_size=8, verbose=0, seed=0)
    assert np.isfinite(hist.history["loss"]).all()
    model.save(tmp_path / "m.npz")
    loaded = nn.load_model(tmp_path / "m.npz")
    assert [type(m).__name__ for m in loaded] == [type(m).__name__ for m in model]
    assert loaded[1].approximate == "tanh" and loaded[4].negative_slope == 0.1
    assert loaded[2].output_size == (4, 4) and loaded[5].alpha == 0.7
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_no_grad_keeps_nothing_and_backward_says_so(rng):
    x = rng.standard_normal((2, 3, 4, 4))
    for layer in (A.GELU(), A.LogSoftmax(), A.GlobalMaxPool2d(), A.AdaptiveAvgPool2d(2)):
        with nn.no_grad():
            layer.forward(x)
        with pytest.raises(RuntimeError, match="backward called without a preceding forward"):
            layer.backward(np.ones((2, 3)))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="GELU: approximate must be 'none' or 'tanh', got 'fast'"):
        A.GELU("fast")
    with pytest.raises(TypeError, match="LeakyReLU: negative_slope must be a number"):
        A.LeakyReLU("a")
    with pytest.raises(ValueError, match="ELU: alpha must be finite, got nan"):
        A.ELU(float("nan"))
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool2d: output_size must be an int >= 1 "
                                         r"or a pair .* got \(0, 2\)"):
        A.AdaptiveAvgPool2d((0, 2))
    with pytest.raises(ValueError, match=r"GlobalAvgPool2d: expected 4-D input, got input of shape"):
        A.GlobalAvgPool2d().forward(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="SiLU: expected float32 or float64 input, got int64"):
        A.SiLU().forward(np.zeros((2, 3), np.int64))


def test_custom_module_without_backward_says_what_to_implement(rng):
    class MyBlock(nn.Module):
        def forward(self, x):
            return x * 2

    block = MyBlock()
    np.testing.assert_array_equal(block(np.ones(3)), 2.0)     # Module.__call__ runs forward
    model = nn.Sequential([nn.Linear(3, 3), MyBlock()])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(NotImplementedError,
                       match=r"MyBlock defines forward but not backward; fastconv has no "
                             r"autograd: implement MyBlock.backward\(grad_out\) returning"):
        model.fit(rng.standard_normal((4, 3)).astype(np.float32),
                  rng.standard_normal((4, 3)).astype(np.float32), verbose=0)
