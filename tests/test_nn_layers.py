"""Layers, losses and initialisers of ``fastconv.nn``.

Every backward pass is checked against central differences in float64 of the
scalar ``L = sum(layer(x) * g)`` for a fixed random ``g`` (so dL/dy = g).
"""

import numpy as np
import pytest

import fastconv
from fastconv import nn
from fastconv.nn import init

EPS = 1e-6
TOL = {"rtol": 1e-5, "atol": 1e-7}


@pytest.fixture(autouse=True)
def _one_kernel_thread():
    """Gradient checks make thousands of tiny kernel calls; on a loaded 2-core
    machine a 2-thread OpenMP team waits on descheduled workers (mean call time
    3x the median), and thread counts are covered by tests/test_determinism.py."""
    before = fastconv.get_num_threads()
    fastconv.set_num_threads(1)
    yield
    fastconv.set_num_threads(before)


def numerical_grad(f, arr, eps=EPS, max_entries=None, rng=None):
    """Central differences of the scalar ``f()`` w.r.t. ``arr`` (perturbed in place).

    Returns (indices, grads) over all entries, or a random subset of
    ``max_entries`` of them.
    """
    flat = arr.reshape(-1)
    idx = np.arange(flat.size)
    if max_entries is not None and flat.size > max_entries:
        idx = np.sort(rng.choice(flat.size, max_entries, replace=False))
    out = np.empty(len(idx))
    for j, i in enumerate(idx):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        out[j] = (fp - fm) / (2 * eps)
    return idx, out


def check_layer_grads(layer, x, rng, max_entries=None, check_input=True):
    """Compare backward() with central differences for the input and every parameter."""
    layer.needs_input_grad = check_input
    y = layer(x)
    g = rng.standard_normal(y.shape)
    for p in layer.parameters():
        p.grad[...] = 0
    gx = layer.backward(g)
    analytic = {name: p.grad.copy() for name, p in layer.named_parameters()}

    def loss():
        return float(np.sum(layer(x) * g))

    if check_input:
        idx, num = numerical_grad(loss, x, max_entries=max_entries, rng=rng)
        np.testing.assert_allclose(gx.reshape(-1)[idx], num, **TOL, err_msg="grad input")
    else:
        assert gx is None
    for name, p in layer.named_parameters():
        idx, num = numerical_grad(loss, p.data, max_entries=max_entries, rng=rng)
        np.testing.assert_allclose(analytic[name].reshape(-1)[idx], num, **TOL, err_msg=name)


def distinct(rng, shape):
    """Values with no ties (gaps >= 1e-2), for max-pool gradient checks."""
    n = int(np.prod(shape))
    return (rng.permutation(n).astype(np.float64) * 1e-2 - n * 5e-3).reshape(shape)


# -- gradients ---------------------------------------------------------------
CONV_CASES = [
    dict(cin=3, cout=4, k=3),
    dict(cin=2, cout=3, k=1),
    dict(cin=2, cout=3, k=(2, 3), stride=2, padding=1),
    dict(cin=2, cout=2, k=3, padding="same"),
    dict(cin=1, cout=2, k=3, padding="valid", dilation=2),
    dict(cin=4, cout=6, k=3, groups=2, padding=(1, 0)),
    dict(cin=2, cout=2, k=2, bias=False, stride=(1, 2)),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_conv2d_gradients(case, rng):
    case = dict(case)
    cin, cout, k = case.pop("cin"), case.pop("cout"), case.pop("k")
    layer = nn.Conv2d(cin, cout, k, rng=rng, dtype=np.float64, **case)
    if layer.bias is not None:
        layer.bias.data[:] = rng.standard_normal(cout)
    x = rng.standard_normal((2, cin, 7, 6))
    check_layer_grads(layer, x, rng)


def test_conv2d_first_layer_skips_input_grad(rng):
    layer = nn.Conv2d(1, 3, 3, rng=rng, dtype=np.float64)
    check_layer_grads(layer, rng.standard_normal((2, 1, 6, 6)), rng, check_input=False)


def test_conv2d_frozen_weight(rng):
    layer = nn.Conv2d(2, 3, 3, rng=rng, dtype=np.float64)
    layer.weight.requires_grad = False
    x = rng.standard_normal((2, 2, 5, 5))
    y = layer(x)
    gx = layer.backward(np.ones_like(y))
    assert not layer.weight.grad.any()
    np.testing.assert_allclose(layer.bias.grad, np.full(3, 2 * 3 * 3))
    assert gx.shape == x.shape


@pytest.mark.parametrize("kernel,stride,padding", [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), 0), (3, 1, 1)])
def test_max_pool2d_gradients(kernel, stride, padding, rng):
    layer = nn.MaxPool2d(kernel, stride, padding)
    x = distinct(rng, (2, 3, 7, 8))
    check_layer_grads(layer, x, rng)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("kernel,stride,padding", [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 1))])
def test_avg_pool2d_gradients(kernel, stride, padding, count_include_pad, rng):
    layer = nn.AvgPool2d(kernel, stride, padding, count_include_pad=count_include_pad)
    check_layer_grads(layer, rng.standard_normal((2, 3, 7, 8)), rng)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_gradients(bias, rng):
    layer = nn.Linear(7, 5, bias=bias, rng=rng, dtype=np.float64)
    if bias:
        layer.bias.data[:] = rng.standard_normal(5)
    check_layer_grads(layer, rng.standard_normal((4, 7)), rng)


@pytest.mark.parametrize("cls", [nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Softmax, nn.Flatten])
def test_activation_gradients(cls, rng):
    x = rng.standard_normal((3, 4, 5))
    if cls is nn.ReLU:  # keep central differences away from the kink at 0
        x += np.sign(x) * 0.1
    check_layer_grads(cls(), x, rng)


def test_dropout_gradients_with_fixed_mask(rng):
    x = rng.standard_normal((4, 6, 3, 3))
    layer = nn.Dropout(0.3, rng=7)
    y = layer(x)
    g = rng.standard_normal(y.shape)
    gx = layer.backward(g)

    def loss():  # same seed -> same mask on every evaluation
        return float(np.sum(nn.Dropout(0.3, rng=7)(x) * g))

    idx, num = numerical_grad(loss, x)
    np.testing.assert_allclose(gx.reshape(-1)[idx], num, **TOL)
    np.testing.assert_array_equal(gx, g * layer.mask)


@pytest.mark.parametrize("cls,shape", [(nn.BatchNorm2d, (4, 3, 3, 2)), (nn.BatchNorm1d, (6, 4)),
                                       (nn.BatchNorm1d, (3, 2, 5))])
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradients(cls, shape, training, rng):
    layer = cls(shape[1], dtype=np.float64)
    layer.weight.data[:] = rng.uniform(0.5, 1.5, shape[1])
    layer.bias.data[:] = rng.standard_normal(shape[1])
    layer.running_mean[:] = rng.standard_normal(shape[1])
    layer.running_var[:] = rng.uniform(0.5, 2, shape[1])
    layer.train(training)
    check_layer_grads(layer, rng.standard_normal(shape) * 2 + 1, rng)


def test_sequential_gradients_end_to_end(rng):
    model = nn.Sequential([
        nn.Conv2d(2, 3, 3, padding=1, rng=rng, dtype=np.float64),
        nn.BatchNorm2d(3, dtype=np.float64),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Conv2d(3, 4, 2, rng=rng, dtype=np.float64),
        nn.Sigmoid(),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 5, rng=rng, dtype=np.float64),
    ])
    x = rng.standard_normal((3, 2, 6, 6))
    labels = np.array([0, 4, 2])
    loss = nn.CrossEntropyLoss()
    model.needs_input_grad = True
    model.zero_grad()
    loss.forward(model(x), labels)
    gx = model.backward(loss.backward())
    grads = {n: p.grad.copy() for n, p in model.named_parameters()}

    def f():
        return loss.forward(model(x), labels)

    idx, num = numerical_grad(f, x, max_entries=40, rng=rng)
    np.testing.assert_allclose(gx.reshape(-1)[idx], num, **TOL)
    for name, p in model.named_parameters():
        idx, num = numerical_grad(f, p.data, max_entries=20, rng=rng)
        np.testing.assert_allclose(grads[name].reshape(-1)[idx], num, **TOL, err_msg=name)


# -- losses --------------------------------------------------------------------
def _loss_grad_check(loss, z, target):
    loss.forward(z, target)
    analytic = loss.backward()
    idx, num = numerical_grad(lambda: loss.forward(z, target), z)
    np.testing.assert_allclose(analytic.reshape(-1)[idx], num, **TOL)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_gradients(reduction, rng):
    z = rng.standard_normal((5, 4)) * 3
    _loss_grad_check(nn.CrossEntropyLoss(reduction), z, rng.integers(0, 4, 5))
    _loss_grad_check(nn.CrossEntropyLoss(reduction), z, rng.dirichlet(np.ones(4), 5))


def test_cross_entropy_values_and_stability(rng):
    z = rng.standard_normal((6, 3))
    y = rng.integers(0, 3, 6)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    expected = -np.mean(np.log(p[np.arange(6), y]))
    loss = nn.CrossEntropyLoss()
    assert loss(z, y) == pytest.approx(expected, rel=1e-12)
    assert loss(z, np.eye(3)[y]) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(loss.backward(), (p - np.eye(3)[y]) / 6, rtol=1e-12)
    # huge logits: log-sum-exp keeps it finite and exact
    big = np.array([[1000.0, 0.0, -1000.0]], np.float32)
    assert loss(big, np.array([0])) == 0.0
    assert loss(big, np.array([1])) == pytest.approx(1000.0)
    assert np.isfinite(loss.backward()).all()


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_gradients_and_value(reduction, rng):
    z = rng.standard_normal((5, 3))
    t = rng.standard_normal((5, 3))
    _loss_grad_check(nn.MSELoss(reduction), z, t)
    _loss_grad_check(nn.MSELoss(reduction), z, rng.integers(0, 3, 5))
    scale = z.size if reduction == "mean" else 1
    assert nn.MSELoss(reduction)(z, t) == pytest.approx(np.sum((z - t) ** 2) / scale)


def test_loss_bad_targets():
    z = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"class labels must be in \[0, 3\)"):
        nn.CrossEntropyLoss()(z, np.array([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="integer target must have shape"):
        nn.CrossEntropyLoss()(z, np.array([0, 1]))
    with pytest.raises(ValueError, match="float target must have the output's shape"):
        nn.MSELoss()(z, np.zeros((4, 2)))
    with pytest.raises(TypeError, match="target must be"):
        nn.CrossEntropyLoss()(z, np.array(["a"] * 4))
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        nn.get_loss("hinge")
    assert isinstance(nn.get_loss("categorical_crossentropy"), nn.CrossEntropyLoss)
    assert isinstance(nn.get_loss("MSE"), nn.MSELoss)


# -- forward values and behaviour ----------------------------------------------
def test_conv_and_pool_layers_match_functional(rng):
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=rng)
    np.testing.assert_array_equal(
        conv(x), fastconv.conv2d(x, conv.weight.data, conv.bias.data, 2, 1))
    np.testing.assert_array_equal(nn.MaxPool2d(3, 2, 1)(x), fastconv.max_pool2d(x, 3, 2, 1))
    np.testing.assert_array_equal(nn.AvgPool2d(2)(x), fastconv.avg_pool2d(x, 2))


def test_lenet_matches_torch(rng):
    """Independent oracle: the whole LeNet-5 forward and parameter gradients vs PyTorch."""
    torch = pytest.importorskip("torch")
    model = fastconv.models.lenet5(seed=1, dtype=np.float64)
    x = rng.random((4, 1, 28, 28))
    y = rng.integers(0, 10, 4)
    tm = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(400, 120), torch.nn.ReLU(), torch.nn.Linear(120, 84), torch.nn.ReLU(),
        torch.nn.Linear(84, 10)).double()
    with torch.no_grad():
        for (_, p), tp in zip(model.named_parameters(), tm.parameters()):
            tp.copy_(torch.from_numpy(p.data))
    loss = nn.CrossEntropyLoss()
    model.zero_grad()
    value = loss.forward(model(x), y)
    model.backward(loss.backward())
    tout = torch.nn.functional.cross_entropy(tm(torch.from_numpy(x)), torch.from_numpy(y))
    tout.backward()
    assert value == pytest.approx(tout.item(), rel=1e-12)
    for (name, p), tp in zip(model.named_parameters(), tm.parameters()):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_activation_values():
    x = np.array([[-800.0, -1.0, 0.0, 2.0, 800.0]])
    np.testing.assert_array_equal(nn.ReLU()(x), [[0, 0, 0, 2, 800]])
    with np.errstate(all="raise"):  # no overflow warnings at the extremes
        s = nn.Sigmoid()(x)
    np.testing.assert_allclose(s, 1 / (1 + np.exp(-np.clip(x, -700, 700))), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(nn.Tanh()(x), np.tanh(x))
    p = nn.Softmax()(x)
    assert p.sum() == pytest.approx(1.0) and p[0, -1] == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(2, 3), (64, 6, 28, 28)], ids=["numpy-path", "kernel-path"])
def test_relu_paths_agree_and_keep_nan(shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[::97] = 0.0
    x.reshape(-1)[5] = np.nan
    layer = nn.ReLU()
    y = layer(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))  # NaN stays NaN, as in PyTorch
    g = rng.standard_normal(shape).astype(np.float32)
    # as torch.relu's backward: zero where y <= 0, so the gradient passes at NaN
    np.testing.assert_array_equal(layer.backward(g), g * ~(np.maximum(x, 0) <= 0))


def test_dropout_train_eval_and_seed(rng):
    x = np.ones((200, 50), np.float32)
    d = nn.Dropout(0.25, rng=3)
    y = d(x)
    kept = y != 0
    assert 0.72 < kept.mean() < 0.78
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    assert y.mean() == pytest.approx(1.0, abs=0.03)  # inverted dropout keeps the expectation
    np.testing.assert_array_equal(nn.Dropout(0.25, rng=3)(x), y)  # seeded
    d.eval()
    assert d(x) is x and d.backward(x) is x
    assert nn.Dropout(0.0)(x) is x
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
        nn.Dropout(1.0)


def test_batchnorm_running_stats_and_eval(rng):
    bn = nn.BatchNorm2d(3, momentum=0.1, dtype=np.float64)
    xs = [rng.standard_normal((8, 3, 4, 4)) * 3 + 2 for _ in range(3)]
    rm, rv = np.zeros(3), np.ones(3)
    for x in xs:
        y = bn(x)
        np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
        np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-4)
        rm = 0.9 * rm + 0.1 * x.mean(axis=(0, 2, 3))
        rv = 0.9 * rv + 0.1 * x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn.running_mean, rm, rtol=1e-12)
    np.testing.assert_allclose(bn.running_var, rv, rtol=1e-12)
    assert int(bn.num_batches_tracked) == 3
    bn.eval()
    x = xs[0]
    expected = (x - rm[None, :, None, None]) / np.sqrt(rv[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(bn(x), expected, rtol=1e-12)
    assert int(bn.num_batches_tracked) == 3  # eval does not update statistics
    with pytest.raises(ValueError, match="more than one value per channel"):
        nn.BatchNorm1d(3).train()(np.zeros((1, 3), np.float32))


def test_batchnorm_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((5, 3, 4, 4))
    bn = nn.BatchNorm2d(3, dtype=np.float64)
    tbn = torch.nn.BatchNorm2d(3).double()
    for _ in range(2):
        y = bn(x)
        ty = tbn(torch.from_numpy(x))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(bn.running_var, tbn.running_var.numpy(), rtol=1e-12)
    bn.eval(), tbn.eval()
    np.testing.assert_allclose(bn(x), tbn(torch.from_numpy(x)).detach().numpy(), rtol=1e-10)


# -- Module API ------------------------------------------------------------------
def _small_net(seed=0, dtype=np.float32):
    return nn.Sequential([
        nn.Conv2d(1, 2, 3, rng=seed, dtype=dtype), nn.BatchNorm2d(2, dtype=dtype), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5, rng=seed), nn.Linear(2 * 3 * 3, 4, rng=seed, dtype=dtype),
    ])


def test_parameters_state_dict_and_modes():
    model = _small_net()
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "6.weight", "6.bias"]
    assert len(model.parameters()) == 6
    assert model.num_parameters() == 2 * 9 + 2 + 2 + 2 + 18 * 4 + 4
    state = model.state_dict()
    assert list(state)[-3:] == ["1.running_mean", "1.running_var", "1.num_batches_tracked"]
    other = _small_net(seed=1)
    w_before = other.layers[0].weight.data
    other.load_state_dict(state)
    assert other.layers[0].weight.data is w_before  # loaded in place
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    state["0.weight"][...] = 99  # state_dict returns copies
    assert not (model.layers[0].weight.data == 99).any()
    with pytest.raises(ValueError, match="missing keys"):
        other.load_state_dict({"0.weight": state["0.weight"]})
    bad = dict(state, **{"6.weight": np.zeros((3, 3))})
    with pytest.raises(ValueError, match=r"'6.weight' expects shape \(4, 18\)"):
        other.load_state_dict(bad)
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_sequential_outputs_are_not_overwritten(rng):
    model = _small_net()
    model.eval()
    a_in = rng.random((3, 1, 8, 8)).astype(np.float32)
    a = model(a_in)
    a_copy = a.copy()
    model(rng.random((3, 1, 8, 8)).astype(np.float32))
    np.testing.assert_array_equal(a, a_copy)
    np.testing.assert_array_equal(model(a_in), a_copy)


def test_sequential_input_grad_flag(rng):
    model = _small_net(dtype=np.float64)
    x = rng.random((2, 1, 8, 8))
    assert [m.needs_input_grad for m in model.layers][:2] == [False, True]
    y = model(x)
    assert model.backward(np.ones_like(y)) is None
    model.needs_input_grad = True
    y = model(x)
    assert model.backward(np.ones_like(y)).shape == x.shape
    head = nn.Sequential([nn.Flatten(), nn.Linear(4, 2)])  # nothing before Linear has params
    head(np.ones((1, 2, 2), np.float32))
    assert head.backward(np.ones((1, 2), np.float32)) is None


def test_conv_relu_fusion_is_exact(rng):
    x = rng.standard_normal((3, 2, 9, 9))
    labels = np.array([0, 1, 3])
    results = []
    for fuse in (True, False):
        model = nn.Sequential([
            nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=np.float64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(3, 4, 2, rng=1, dtype=np.float64), nn.ReLU(), nn.Flatten(),
            nn.Linear(36, 4, rng=2, dtype=np.float64)])
        model.fuse_conv_relu = fuse
        model.needs_input_grad = True
        loss = nn.CrossEntropyLoss()
        out = model(x)
        loss.forward(out, labels)
        gx = model.backward(loss.backward())
        results.append((out, gx, [p.grad.copy() for p in model.parameters()]))
    (a, ga, pa), (b, gb, pb) = results
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ga, gb)
    for u, v in zip(pa, pb):
        np.testing.assert_array_equal(u, v)
    conv = nn.Conv2d(1, 2, 3, rng=0)  # a standalone conv never rectifies
    assert (conv(rng.standard_normal((1, 1, 5, 5)).astype(np.float32)) < 0).any()


@pytest.mark.parametrize("pool", [(2, 2), (3, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_pool_backward_fusion_is_exact(rng, pool, dtype):
    # ReLU -> MaxPool2d back-propagates inside the pool's backward; gradients
    # must match the layer-by-layer path bit for bit, overlapping windows (3x3
    # stride 2), exact zeros and a NaN included
    x = rng.standard_normal((4, 2, 11, 11)).astype(dtype)
    x[0, 0, :3, :3] = -1.0  # a window whose ReLU output is all zero
    x[1, 1, 4, 4] = np.nan
    g_out = rng.standard_normal((4, 10)).astype(dtype)
    g_out[0, 0] = -0.0
    results = []
    for fuse in (True, False):
        model = nn.Sequential([
            nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=dtype), nn.ReLU(), nn.MaxPool2d(*pool),
            nn.Conv2d(3, 4, 1, rng=1, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(4 * 2 * 2, 10, rng=2, dtype=dtype)])
        model.fuse_relu_pool = fuse
        model.needs_input_grad = True
        model(x)
        gx = model.backward(g_out)
        results.append((gx, [p.grad.copy() for p in model.parameters()]))
        # the masks matter: some pooled outputs are exact zeros
        assert (model.layers[2]._y == 0).any() and (model.layers[5]._y == 0).any()
    (ga, pa), (gb, pb) = results
    np.testing.assert_array_equal(ga, gb)
    assert np.signbit(ga).tolist() == np.signbit(gb).tolist()
    for u, v in zip(pa, pb):
        np.testing.assert_array_equal(u, v)


def test_no_grad_skips_caches():
    layer = nn.Conv2d(1, 1, 3)
    with nn.no_grad():
        y = layer(np.zeros((1, 1, 5, 5), np.float32))
    with pytest.raises(RuntimeError, match="without a preceding forward"):
        layer.backward(np.ones_like(y))
    assert nn.is_grad_enabled()


def test_config_round_trip_for_every_layer():
    layers = [
        nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding="valid", dilation=2, groups=2, bias=False,
                  weight_init="glorot_normal"),
        nn.Conv2d(1, 2, 3, padding="same", dtype=np.float64), nn.MaxPool2d(3, 2, 1),
        nn.AvgPool2d(2, count_include_pad=False), nn.Linear(3, 4, bias=False), nn.Flatten(),
        nn.ReLU(), nn.Sigmoid(), nn.Tanh(), nn.Softmax(axis=-1), nn.Dropout(0.2),
        nn.BatchNorm1d(5, eps=1e-3, momentum=None, affine=False), nn.BatchNorm2d(3),
        nn.Sequential([nn.Linear(2, 2), nn.ReLU()]),
    ]
    for layer in layers:
        spec = {"class": type(layer).__name__, "config": layer.get_config()}
        import json
        rebuilt = nn.layer_from_config(json.loads(json.dumps(spec)))
        assert type(rebuilt) is type(layer)
        assert rebuilt.get_config() == layer.get_config()
        assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in layer.parameters()]
    with pytest.raises(ValueError, match="unknown layer class 'Nope'"):
        nn.layer_from_config({"class": "Nope"})


def test_custom_layer_registration():
    @nn.register_layer
    class Scale(nn.Module):
        def __init__(self, factor=2.0):
            super().__init__()
            self.factor = factor

        def forward(self, x):
            return x * self.factor

        def backward(self, g):
            return g * self.factor

        def get_config(self):
            return {"factor": self.factor}

        @classmethod
        def from_config(cls, config):
            return cls(**config)

    rebuilt = nn.layer_from_config({"class": "Scale", "config": {"factor": 3.0}})
    assert rebuilt(np.ones(2))[0] == 3.0


# -- input validation ---------------------------------------------------------------
def test_layer_input_validation():
    conv = nn.Conv2d(1, 6, 5)
    with pytest.raises(ValueError, match=r"expected input with 1 channels, got input of shape \(2, 3, 8, 8\)"):
        conv(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"expected 4-D input, got input of shape \(8, 8\)"):
        conv(np.zeros((8, 8), np.float32))
    with pytest.raises(TypeError, match="expected input of dtype float32.*got float64"):
        conv(np.zeros((1, 1, 8, 8)))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3\), got shape \(2, 4\)"):
        nn.Linear(3, 2)(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="expected float32 or float64 input, got int64"):
        nn.ReLU()(np.zeros((2, 2), np.int64))
    with pytest.raises(TypeError, match="kernel_size must be an int or a pair"):
        nn.Conv2d(1, 1, 2.5)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        nn.MaxPool2d(2, 0)
    with pytest.raises(ValueError, match=r"divisible by groups \(2\)"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match=r"padding must be an int, a pair, per side "
                                         r"\(\(top, bottom\), \(left, right\)\), 'same' or 'valid'"):
        nn.Conv2d(1, 1, 3, padding="full")
    with pytest.raises(TypeError, match="dtype must be float32 or float64, got float16"):
        nn.Linear(2, 2, dtype=np.float16)
    with pytest.raises(ValueError, match="unknown initialiser 'lecun'"):
        nn.Linear(2, 2, weight_init="lecun")


# -- initialisers ---------------------------------------------------------------------
@pytest.mark.parametrize("name,shape,expected_var", [
    ("he_normal", (64, 32, 3, 3), 2 / (32 * 9)),
    ("he_uniform", (64, 32, 3, 3), 2 / (32 * 9)),
    ("glorot_normal", (300, 200), 2 / 500),
    ("glorot_uniform", (300, 200), 2 / 500),
    ("normal", (300, 200), 1e-4),
])
def test_initialiser_variance(name, shape, expected_var):
    w = init.get(name)(shape, np.random.default_rng(0), np.float64)
    assert w.shape == shape and w.dtype == np.float64
    assert abs(w.mean()) < 0.05 * np.sqrt(expected_var)
    assert w.var() == pytest.approx(expected_var, rel=0.05)


def test_initialiser_details():
    assert init.compute_fans((6, 1, 5, 5)) == (25, 150)
    assert init.compute_fans((120, 400)) == (400, 120)
    w = init.glorot_uniform((20, 30), 1)
    assert w.dtype == np.float32 and np.abs(w).max() <= np.sqrt(6 / 50)
    np.testing.assert_array_equal(w, init.xavier_uniform((20, 30), np.random.default_rng(1)))
    assert not init.zeros((3, 2)).any() and init.ones(3).sum() == 3
    assert init.get("kaiming_normal") is init.he_normal
    a = nn.Conv2d(3, 8, 3, rng=5).weight.data
    np.testing.assert_array_equal(a, nn.Conv2d(3, 8, 3, rng=np.random.default_rng(5)).weight.data)
    assert not np.array_equal(a, nn.Conv2d(3, 8, 3, rng=6).weight.data)
    assert not nn.Conv2d(3, 8, 3).bias.data.any()


def test_models_architecture():
    m = fastconv.models.lenet5(seed=0)
    assert m.num_parameters() == 61706
    assert m(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)
    c = fastconv.models.mnist_cnn(seed=0, dtype=np.float64)
    assert c.num_parameters() == 3274634 and c.dtype == np.float64
    assert any(isinstance(layer, nn.Dropout) for layer in c)
    np.testing.assert_array_equal(fastconv.models.lenet5(seed=0).state_dict()["0.weight"],
                                  m.state_dict()["0.weight"])


def test_grouped_conv_layer_in_sequential():
    """Regression: Conv2d with groups > 1 under reuse_buffers (every Sequential
    predict/fit) failed, because Conv2d._forward called F.conv2d_output_shape
    without groups= and a valid grouped input was refused."""
    model = nn.Sequential([nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)])
    model.compile(optimizer="sgd", loss="cross_entropy")
    x = np.ones((2, 4, 8, 8), np.float32)
    assert model.predict(x).shape == (2, 3)
