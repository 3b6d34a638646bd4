"""fastconv.onnx: export to ONNX Runtime, import from PyTorch, untrusted files.

Skips when onnx (all tests), onnxruntime (the export round trips) or torch
(the PyTorch import) is missing; the test extra installs onnx and onnxruntime.
"""

import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import fastconv  # noqa: E402
import fastconv.onnx as fo  # noqa: E402
from fastconv import nn  # noqa: E402

RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def eval_out(model, x):
    """Evaluation-mode output (what the exported graph computes)."""
    was = model.training
    model.eval()
    try:
        with nn.no_grad():
            return np.array(model(x))
    finally:
        model.train(was)


def close(a, b, dtype=np.float32):
    # relative to the output's scale: a logit that happens to be near 0 still
    # carries the absolute rounding error of the larger terms summed into it
    scale = float(np.abs(b).max()) or 1.0
    np.testing.assert_allclose(a, b, rtol=RTOL[dtype], atol=RTOL[dtype] * scale)


def run_ort(path, x):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


# -- export ---------------------------------------------------------------------
@pytest.mark.parametrize("factory", ["lenet5", "mnist_cnn"])
def test_builtin_models_run_in_onnx_runtime(tmp_path, factory):
    model = getattr(fastconv.models, factory)(seed=1)
    path = tmp_path / "m.onnx"
    proto = fo.export(model, path, input_shape=(1, 28, 28))
    assert [o.version for o in proto.opset_import] == [fo.DEFAULT_OPSET]
    x = np.random.default_rng(0).standard_normal((7, 1, 28, 28)).astype(np.float32)
    y = run_ort(path, x)
    close(y, eval_out(model, x))
    # predict is the softmax of those logits
    e = np.exp(y - y.max(1, keepdims=True))
    close(model.predict(x), e / e.sum(1, keepdims=True))
    # the batch axis is dynamic
    assert run_ort(path, x[:1]).shape == (1, 10)


def every_layer_model(dtype=np.float32):
    rng = np.random.default_rng(3)
    kw = {"rng": rng, "dtype": dtype}
    bn = nn.BatchNorm2d(6, dtype=dtype)
    bn.running_mean[...] = rng.standard_normal(6)
    bn.running_var[...] = rng.uniform(0.5, 2, 6)
    bn.weight.data[...] = rng.uniform(0.5, 2, 6)
    bn.bias.data[...] = rng.standard_normal(6)
    bn1 = nn.BatchNorm1d(20, dtype=dtype, affine=False)
    bn1.running_var[...] = rng.uniform(0.5, 2, 20)
    return nn.Sequential([
        nn.Conv2d(2, 6, (3, 2), padding="same", **kw),
        bn,
        nn.LeakyReLU(0.2),
        nn.AvgPool2d(3, 2, padding=1, count_include_pad=False),
        nn.Conv2d(6, 8, 3, stride=2, padding=1, dilation=1, groups=2, **kw),
        nn.ELU(0.7),
        nn.MaxPool2d(2, padding=1),
        nn.Conv2d(8, 8, 1, bias=False, **kw),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.25),
        nn.Linear(32, 20, **kw),
        bn1,
        nn.Sigmoid(),
        nn.Linear(20, 5, bias=False, **kw),
        nn.LogSoftmax(),
    ])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_layer_round_trips(tmp_path, dtype):
    model = every_layer_model(dtype)
    x = np.random.default_rng(1).standard_normal((3, 2, 24, 23)).astype(dtype)
    path = tmp_path / "all.onnx"
    fo.export(model, path, input_shape=x.shape[1:])
    if dtype == np.float32:  # ONNX Runtime's CPU Conv is float32 only
        close(run_ort(path, x), eval_out(model, x), dtype)
    back = fo.load(path)
    # the equal-bin adaptive pool comes back as an AvgPool2d, the rest as itself
    assert [type(m) for m in back.layers] == [
        nn.AvgPool2d if isinstance(m, nn.AdaptiveAvgPool2d) else type(m) for m in model.layers]
    close(eval_out(back, x), eval_out(model, x), dtype)
    assert back.dtype == dtype


def with_head(layers, sample_shape, classes=5):
    """``layers`` + Flatten + Linear sized for one sample of ``sample_shape``."""
    body = nn.Sequential(layers)
    feats = eval_out(body, np.zeros((1, *sample_shape), np.float32)).size
    return nn.Sequential(layers + [nn.Flatten(), nn.Linear(feats, classes, rng=9)])


def new_layer_models():
    """2-D and 1-D models using every layer argument of the kernel features (#13)."""
    model2d = with_head([
        nn.Conv2d(2, 4, (3, 2), padding=((0, 1), (1, 0)), rng=0),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, stride=2, padding="same", rng=1),
        nn.MaxPool2d(3, 2, padding=((1, 0), (0, 1)), dilation=(1, 2), ceil_mode=True),
        nn.AvgPool2d((2, 3), 2, padding=((1, 0), (1, 1)), ceil_mode=True,
                     count_include_pad=False),
        nn.AvgPool2d(2, 1, padding=((1, 0), (0, 1)), count_include_pad=True),
    ], (2, 23, 19))
    model1d = with_head([
        nn.Conv1d(2, 4, 3, stride=2, padding=(0, 2), rng=2),
        nn.ReLU(),
        nn.Conv1d(4, 4, 4, stride=3, padding="same", rng=3),
        nn.MaxPool1d(3, 2, padding=(1, 0), dilation=2, ceil_mode=True),
        nn.Conv1d(4, 3, 2, padding=1, dilation=2, rng=4),
        nn.AvgPool1d(3, 2, padding=(0, 2), ceil_mode=True, count_include_pad=False),
    ], (2, 41))
    return {"2d": (model2d, (2, 23, 19)), "1d": (model1d, (2, 41))}


@pytest.mark.parametrize("kind", ["2d", "1d"])
def test_new_layer_arguments_round_trip_through_onnx_runtime(tmp_path, kind):
    # per-side padding, 'same' at stride > 1, ceil mode, pooling dilation and the
    # 1-D layers: exported, ONNX Runtime equals predict, and they load back
    model, sample = new_layer_models()[kind]
    x = np.random.default_rng(6).standard_normal((4, *sample)).astype(np.float32)
    path = tmp_path / f"{kind}.onnx"
    fo.export(model, path, input_shape=sample)
    y = run_ort(path, x)
    close(y, eval_out(model, x))
    e = np.exp(y - y.max(1, keepdims=True))
    close(model.predict(x), e / e.sum(1, keepdims=True))
    back = fo.load(path)
    assert [type(m) for m in back.layers] == [type(m) for m in model.layers]
    close(eval_out(back, x), eval_out(model, x))


def test_ceil_mode_export_where_rounding_up_is_undone(tmp_path):
    # 6 rows, 2x2/2 windows, 1 row of trailing padding: the window ceil mode adds
    # would start in that padding, so the size is floor mode's; it is written as
    # floor mode, which ONNX's shape inference (unlike for ceil_mode=1) sizes right
    model = nn.Sequential([nn.MaxPool2d(2, 2, padding=((0, 1), (0, 0)), ceil_mode=True)])
    path = tmp_path / "p.onnx"

    def ceil_attr(proto):
        return {a.name: a.i for a in proto.graph.node[0].attribute}["ceil_mode"]

    rng = np.random.default_rng(8)
    for sample, ceil, out in (((1, 6, 4), 0, (3, 2)),    # rows: undone; columns: exact
                              ((1, 5, 5), 1, (3, 3))):   # columns gain a window
        x = rng.standard_normal((2, *sample)).astype(np.float32)
        assert ceil_attr(fo.export(model, path, input_shape=sample)) == ceil
        assert eval_out(model, x).shape[2:] == out
        close(run_ort(path, x), eval_out(model, x))
        close(eval_out(fo.load(path), x), eval_out(model, x))
    # rows undone and columns gaining: no single ceil_mode says both to ONNX's checker
    with pytest.raises(ValueError, match=r"layer 0 \(MaxPool2d\): ceil_mode=True keeps an "
                                         r"extra window on spatial axis 1 and drops"):
        fo.export(model, path, input_shape=(1, 6, 5))


def test_conv1d_batchnorm1d_folds(tmp_path):
    rng = np.random.default_rng(7)
    bn = nn.BatchNorm1d(4)
    bn.running_mean[...] = rng.standard_normal(4)
    bn.running_var[...] = rng.uniform(0.5, 2, 4)
    bn.weight.data[...] = rng.uniform(0.5, 2, 4)
    model = nn.Sequential([nn.Conv1d(2, 4, 3, padding=(2, 0), rng=0), bn, nn.ReLU()])
    x = rng.standard_normal((3, 2, 9)).astype(np.float32)
    path = tmp_path / "c1.onnx"
    fo.export(model, path, input_shape=(2, 9))
    folded = fo.load(path, fold_batchnorm=True)
    assert [type(m) for m in folded.layers] == [nn.Conv1d, nn.ReLU]
    assert folded.layers[0].padding == (2, 0)
    np.testing.assert_allclose(eval_out(folded, x), eval_out(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opset", [17, 20])
def test_activations_without_a_single_onnx_operator(tmp_path, opset):
    # GELU before opset 20 and SiLU are written as several nodes (x is used twice)
    model = nn.Sequential([nn.Linear(4, 6, rng=0), nn.GELU(), nn.Linear(6, 6, rng=1), nn.SiLU(),
                           nn.Linear(6, 3, rng=2),
                           nn.Softmax()])
    x = np.random.default_rng(2).standard_normal((5, 4)).astype(np.float32)
    path = tmp_path / "act.onnx"
    fo.export(model, path, input_shape=(4,), opset=opset)
    close(run_ort(path, x), eval_out(model, x))
    with pytest.raises(ValueError, match=r"feeds 2 nodes"):
        fo.load(path)


def test_global_pools_and_gelu_tanh(tmp_path):
    model = nn.Sequential([nn.Conv2d(1, 4, 3, rng=0), nn.GELU("tanh"), nn.GlobalMaxPool2d(),
                           nn.Linear(4, 4, rng=1), nn.ReLU()])
    model2 = nn.Sequential([nn.Conv2d(1, 4, 3, rng=0), nn.GlobalAvgPool2d(keepdims=True),
                            nn.Flatten()])
    x = np.random.default_rng(5).standard_normal((2, 1, 9, 9)).astype(np.float32)
    for m, opset in ((model, 20), (model2, 17)):
        path = tmp_path / "g.onnx"
        fo.export(m, path, input_shape=(1, 9, 9), opset=opset)
        close(run_ort(path, x), eval_out(m, x))
        close(eval_out(fo.load(path), x), eval_out(m, x))
    with pytest.raises(ValueError, match=r"opset 20"):
        fo.export(model, tmp_path / "t.onnx", input_shape=(1, 9, 9), opset=17)


def test_export_refuses_unsupported_layers_by_index(tmp_path):
    class Custom(nn.ReLU):
        pass

    model = nn.Sequential([nn.Conv2d(1, 2, 3, rng=0), nn.ReLU(), Custom()])
    path = tmp_path / "x.onnx"
    with pytest.raises(ValueError, match=r"layer 2 \(Custom\) has no ONNX export"):
        fo.export(model, path, input_shape=(1, 5, 5))
    assert not path.exists()
    model = nn.Sequential([nn.Conv2d(1, 2, 3, rng=0), nn.AdaptiveAvgPool2d(2)])
    with pytest.raises(ValueError, match=r"layer 1 \(AdaptiveAvgPool2d\).*unequal bins"):
        fo.export(model, path, input_shape=(1, 7, 7))
    with pytest.raises(ValueError, match=r"does not run on input_shape"):
        fo.export(model, path, input_shape=(3, 7, 7))
    with pytest.raises(ValueError, match=r"input_shape"):
        fo.export(model, path, input_shape=(1, 0, 7))
    with pytest.raises(TypeError, match=r"Sequential"):
        fo.export(nn.ReLU(), path, input_shape=(1,))
    with pytest.raises(ValueError, match=r"opset must be between 13"):
        fo.export(model, path, input_shape=(1, 8, 8), opset=11)
    assert not path.exists()


def test_export_is_atomic(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"old")
    model = nn.Sequential([nn.Linear(3, 2, rng=0), nn.Softmax(axis=0)])
    with pytest.raises(ValueError, match=r"batch axis"):
        fo.export(model, path, input_shape=(3,))
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["m.onnx"]


# -- import from PyTorch ----------------------------------------------------------
def torch_cnn():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1), torch.nn.BatchNorm2d(16),
        torch.nn.ReLU(),
        # ceil_mode is exact here: (7 - 3) % 2 == 0, so it rounds like floor mode
        torch.nn.MaxPool2d(3, stride=2, ceil_mode=True),
        torch.nn.Flatten(), torch.nn.Dropout(0.3), torch.nn.Linear(16 * 3 * 3, 32),
        torch.nn.ReLU(), torch.nn.Linear(32, 10))
    net.train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(3):
            net(torch.randn(16, 1, 28, 28))
    return net.eval()


def torch_export(net, path, x, **kw):
    torch = pytest.importorskip("torch")
    # dynamo=False: the TorchScript exporter works offline with torch alone
    # (the dynamo exporter needs onnxscript); PRESERVE keeps BatchNormalization
    # nodes instead of folding them into the convolutions
    torch.onnx.export(net, (torch.from_numpy(x),), str(path), input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "N"}, "y": {0: "N"}},
                      opset_version=17, dynamo=False,
                      training=torch.onnx.TrainingMode.PRESERVE, **kw)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_pytorch_model_loads_predicts_trains_and_saves(tmp_path):
    torch = pytest.importorskip("torch")
    net = torch_cnn()
    x = np.random.default_rng(0).standard_normal((6, 1, 28, 28)).astype(np.float32)
    path = tmp_path / "torch.onnx"
    torch_export(net, path, x[:2])
    ops = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert "BatchNormalization" in ops and "Gemm" in ops
    model = fo.load(path)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    close(eval_out(model, x), expected)
    e = np.exp(expected - expected.max(1, keepdims=True))
    close(model.predict(x), e / e.sum(1, keepdims=True))

    folded = fo.load(path, fold_batchnorm=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.layers)
    np.testing.assert_allclose(eval_out(folded, x), expected, rtol=1e-4, atol=1e-5)

    saved = tmp_path / "loaded.npz"
    model.save(saved)
    close(eval_out(fastconv.load_model(saved), x), expected)

    # one epoch of fine-tuning on small random data runs and changes the weights
    rng = np.random.default_rng(1)
    xs = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    ys = rng.integers(0, 10, 64)
    model.compile(optimizer=fastconv.optim.SGD(model.parameters(), lr=0.05),
                  loss="cross_entropy")
    before = model.layers[0].weight.data.copy()
    hist = model.fit(xs, ys, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    assert not np.array_equal(before, model.layers[0].weight.data)


def torch_asymmetric_nets():
    """(expected, exported): the same layers; the first pads asymmetrically by hand.

    ``exported`` has symmetric padding of the same totals (torch layers have no
    other), written to ONNX and then given ``expected``'s per-side pads; the
    sizes agree all along, so the exported weights fit. The max pool rounds up
    (ceil_mode) past the input, and the average pool's last window overhangs it.
    """
    torch = pytest.importorskip("torch")
    nn_ = torch.nn
    torch.manual_seed(0)
    conv1, pool1 = nn_.Conv2d(1, 6, 3, padding=1), nn_.MaxPool2d(3, 2, padding=1, ceil_mode=True)
    body = [nn_.BatchNorm2d(6), nn_.ReLU()]
    tail = [nn_.Conv2d(6, 8, 3, padding=1), nn_.BatchNorm2d(8), nn_.ReLU(),
            nn_.AvgPool2d(2, 2, ceil_mode=True), nn_.Flatten(), nn_.Dropout(0.3),
            nn_.Linear(8 * 8 * 8, 32), nn_.ReLU(), nn_.Linear(32, 10)]
    exported = nn_.Sequential(conv1, *body, pool1, *tail)
    # expected: conv pads top 1, bottom 1, left 0, right 2; pool pads top 2, left 2
    # (-inf, as max pooling pads), then the same layers without padding
    conv0 = nn_.Conv2d(1, 6, 3)
    conv0.load_state_dict(conv1.state_dict())
    expected = nn_.Sequential(nn_.ZeroPad2d((0, 2, 1, 1)), conv0, *body,
                              nn_.ConstantPad2d((2, 0, 2, 0), float("-inf")),
                              nn_.MaxPool2d(3, 2, ceil_mode=True), *tail)
    expected.train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(3):
            expected(torch.randn(16, 1, 28, 28))
    return expected.eval(), exported.eval()


def set_pads(proto, op_type, pads):
    """Give the first ``op_type`` node of ``proto`` these ONNX ``pads``."""
    node = next(n for n in proto.graph.node if n.op_type == op_type)
    for a in node.attribute:
        if a.name == "pads":
            a.ints[:] = pads
            return
    raise AssertionError(f"{op_type} has no pads")


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_pytorch_model_with_ceil_mode_and_asymmetric_padding(tmp_path):
    torch = pytest.importorskip("torch")
    expected_net, exported = torch_asymmetric_nets()
    x = np.random.default_rng(0).standard_normal((6, 1, 28, 28)).astype(np.float32)
    sym = tmp_path / "sym.onnx"
    torch_export(exported, sym, x[:2])
    proto = onnx.load(str(sym))
    set_pads(proto, "Conv", [1, 0, 1, 2])        # top, left, bottom, right
    set_pads(proto, "MaxPool", [2, 2, 0, 0])
    ops = [n.op_type for n in proto.graph.node]
    assert "BatchNormalization" in ops and "Gemm" in ops
    path = write(tmp_path, proto, "asym.onnx")
    with torch.no_grad():
        expected = expected_net(torch.from_numpy(x)).numpy()
    # the oracle itself: ONNX Runtime reads the edited graph as torch computes it
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    close(sess.run(None, {"x": x})[0], expected)

    model = fo.load(path)
    assert model.layers[0].padding == ((1, 1), (0, 2))
    pool = next(m for m in model.layers if isinstance(m, nn.MaxPool2d))
    assert pool.padding == ((2, 0), (2, 0)) and pool.ceil_mode
    close(eval_out(model, x), expected)

    saved = tmp_path / "loaded.npz"
    model.save(saved)
    close(eval_out(fastconv.load_model(saved), x), expected)

    rng = np.random.default_rng(1)
    model.compile(optimizer="sgd", loss="cross_entropy")
    before = model.layers[0].weight.data.copy()
    hist = model.fit(rng.standard_normal((32, 1, 28, 28)).astype(np.float32),
                     rng.integers(0, 10, 32), batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    assert not np.array_equal(before, model.layers[0].weight.data)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
def test_pytorch_zero_pad_joins_the_next_layer(tmp_path):
    # torch.onnx writes ZeroPad2d as a Pad whose pads come out of a chain of
    # constant shape operators; its zeros become the next Conv's or (counting)
    # AveragePool's own per-side padding: TensorFlow-style 'same' by hand
    torch = pytest.importorskip("torch")
    T = torch.nn
    torch.manual_seed(0)
    net = T.Sequential(
        T.ZeroPad2d((0, 1, 0, 1)), T.Conv2d(1, 4, 2, stride=2), T.BatchNorm2d(4), T.ReLU(),
        T.ZeroPad2d((2, 0, 1, 1)), T.Conv2d(4, 4, 3), T.ReLU(),
        # the pool's own (absent) padding is not counted, but the Pad's zeros are
        # inputs to it, so they are counted: count_include_pad=True after joining
        T.ZeroPad2d((1, 0, 1, 0)), T.AvgPool2d(2, ceil_mode=True, count_include_pad=False),
        T.MaxPool2d(3, 2, ceil_mode=True), T.Flatten(), T.Dropout(0.2), T.Linear(4 * 2 * 2, 3))
    net.train()
    with torch.no_grad():
        net(torch.randn(8, 1, 15, 15))
    net.eval()
    x = np.random.default_rng(0).standard_normal((5, 1, 15, 15)).astype(np.float32)
    path = tmp_path / "pad.onnx"
    torch_export(net, path, x[:2])
    assert [n.op_type for n in onnx.load(str(path)).graph.node].count("Pad") == 3
    model = fo.load(path)
    assert [type(m) for m in model.layers] == [
        nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Conv2d, nn.ReLU, nn.AvgPool2d, nn.MaxPool2d,
        nn.Flatten, nn.Linear]
    assert model.layers[0].padding == ((0, 1), (0, 1))
    assert model.layers[3].padding == ((1, 1), (2, 0))
    assert model.layers[5].padding == ((1, 0), (1, 0)) and model.layers[5].count_include_pad
    with torch.no_grad():
        close(eval_out(model, x), net(torch.from_numpy(x)).numpy())


def pad_then(op, pad_pads, value=None, mode=None, shape=(1, 6, 6), **attrs):
    """A Pad node (opset 17) with ``pad_pads`` in front of one ``op`` node."""
    inits = [numpy_helper.from_array(np.array(pad_pads, np.int64), "pads"),
             numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")]
    pad_in = ["x", "pads"]
    if value is not None:
        inits.append(numpy_helper.from_array(np.array(value, np.float32), "v"))
        pad_in.append("v")
    extra = {"mode": mode} if mode else {}
    nodes = [helper.make_node("Pad", pad_in, ["p"], name="pad", **extra),
             helper.make_node(op, ["p", "w"] if op == "Conv" else ["p"], ["y"], name="next",
                              **attrs)]
    return chain_model(nodes, inits, inputs=[helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", *shape])])


def test_pad_nodes_that_do_not_join(tmp_path):
    x = np.random.default_rng(3).standard_normal((2, 1, 6, 6)).astype(np.float32)
    model = fo.load(write(tmp_path, pad_then("Conv", [0, 0, 1, 0, 0, 0, 2, 1])))
    assert model.layers[0].padding == ((1, 2), (0, 1))
    padded = np.pad(x, ((0, 0), (0, 0), (1, 2), (0, 1)))
    plain = nn.Sequential([nn.Conv2d(1, 2, 3, weight_init="ones", bias=False)])
    close(eval_out(model, x), eval_out(plain, padded))
    refused = [
        (pad_then("MaxPool", [0, 0, 1, 1, 0, 0, 1, 1], kernel_shape=[2, 2]),
         r"node 0 'pad' \(Pad\): a Pad is loaded only in front of a 1-D or 2-D Conv or "
         r"AveragePool, whose padding it joins; it feeds MaxPool node 'next'"),
        (pad_then("Conv", [0, 0, 1, 1, 0, 0, 1, 1], value=0.5),
         r"\(Pad\): constant value 0.5 is not zero"),
        (pad_then("Conv", [0, 0, 1, 1, 0, 0, 1, 1], mode="reflect"),
         r"\(Pad\): attribute mode='reflect'"),
        (pad_then("Conv", [0, 1, 1, 1, 0, 0, 1, 1]),
         r"\(Pad\): pads \[0, 1, 1, 1, 0, 0, 1, 1\]: only non-negative padding of the "
         r"spatial axes"),
        (pad_then("Conv", [0, 0, 1, 1, 0, 0, 1, 1], auto_pad="SAME_UPPER"),
         r"node 1 'next' \(Conv\): attribute auto_pad=SAME_UPPER after a Pad node"),
        (pad_then("AveragePool", [0, 0, 1, 1, 0, 0, 1, 1], kernel_shape=[3, 3],
                  pads=[1, 1, 1, 1]),
         r"node 1 'next' \(AveragePool\): attribute count_include_pad=0 with pads=\[1, 1, 1, "
         r"1\] after a Pad node"),
        (pad_then("AveragePool", [0, 0, 0, 0, 0, 0, 1, 1], kernel_shape=[3, 3], ceil_mode=1,
                  strides=[2, 2]),
         r"attribute ceil_mode=1 after a Pad node with trailing padding"),
    ]
    for proto, pattern in refused:
        with pytest.raises(ValueError, match=pattern):
            fo.load(write(tmp_path, proto))


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("dynamic", [True, False])
def test_pytorch_view_flatten_pattern(tmp_path, dynamic):
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c = torch.nn.Conv2d(1, 4, 3)
            self.l = torch.nn.Linear(4 * 6 * 6, 3)

        def forward(self, x):
            x = torch.relu(self.c(x))
            return self.l(x.view(x.size(0), -1))

    torch.manual_seed(0)
    net = Net().eval()
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    path = tmp_path / "v.onnx"
    kw = {"dynamic_axes": {"x": {0: "N"}, "y": {0: "N"}}} if dynamic else {}
    torch.onnx.export(net, (torch.from_numpy(x[:2]),), str(path), input_names=["x"],
                      output_names=["y"], opset_version=17, dynamo=False, **kw)
    model = fo.load(path)
    assert [type(m) for m in model.layers] == [nn.Conv2d, nn.ReLU, nn.Flatten, nn.Linear]
    with torch.no_grad():
        close(eval_out(model, x), net(torch.from_numpy(x)).numpy())


# -- untrusted files ----------------------------------------------------------------
def chain_model(nodes, inits=(), inputs=None, outputs=None, opset=17):
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])]
    outputs = outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])]
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def gemm_model():
    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    return chain_model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, name="fc")],
                       [w, b])


def write(tmp_path, proto, name="m.onnx"):
    path = tmp_path / name
    path.write_bytes(proto.SerializeToString() if not isinstance(proto, bytes) else proto)
    return path


def test_valid_small_model_loads(tmp_path):
    model = fo.load(write(tmp_path, gemm_model()))
    close(eval_out(model, np.ones((2, 4), np.float32)), np.full((2, 3), 4, np.float32))


def test_truncated_and_garbage_files(tmp_path):
    data = gemm_model().SerializeToString()
    for cut in (1, 7, len(data) // 2, len(data) - 3):
        with pytest.raises(ValueError, match=r"fastconv.onnx.load"):
            fo.load(write(tmp_path, data[:cut]))
    with pytest.raises(ValueError, match=r"not an ONNX model|data input"):
        fo.load(write(tmp_path, b"\xff" * 100))
    with pytest.raises(ValueError, match=r"imports no opset"):
        fo.load(write(tmp_path, b""))
    with pytest.raises(ValueError, match=r"not a regular file"):
        fo.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        fo.load(tmp_path / "missing.onnx")


def test_size_caps(tmp_path):
    path = write(tmp_path, gemm_model())
    with pytest.raises(ValueError, match=r"more than max_bytes=10"):
        fo.load(path, max_bytes=10)
    with pytest.raises(ValueError, match=r"'w' declares 12 elements, more than max_elements=11"):
        fo.load(path, max_elements=11)
    relus = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"]) for i in range(50)]
    relus[0].input[0] = "x"
    relus[-1].output[0] = "y"
    with pytest.raises(ValueError, match=r"50 nodes, more than max_nodes=49"):
        fo.load(write(tmp_path, chain_model(relus)), max_nodes=49)


def test_tensor_dims_must_match_the_data(tmp_path):
    for raw in (True, False):
        m = gemm_model()
        w = m.graph.initializer[0]
        if not raw:
            w.ClearField("raw_data")
            w.float_data.extend([1.0] * 12)
        w.dims[0] = 4  # 16 declared, 12 present
        with pytest.raises(ValueError, match=r"tensor 'w' of dims \[4, 4\] needs"):
            fo.load(write(tmp_path, m))
    m = gemm_model()
    m.graph.initializer[0].dims[:] = [1 << 40, 1 << 20]  # a petabyte claimed, 48 bytes given
    with pytest.raises(ValueError, match=r"declares \d+ elements, more than max_elements"):
        fo.load(write(tmp_path, m))
    m = gemm_model()
    m.graph.initializer[0].dims[:] = [-3, -4]
    with pytest.raises(ValueError, match=r"invalid dims"):
        fo.load(write(tmp_path, m))


def test_external_data_is_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.ones(12, np.float32).tobytes())
    m = gemm_model()
    w = m.graph.initializer[0]
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "../" + secret.name), ("offset", "0"), ("length", "48")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    sub = tmp_path / "sub"
    sub.mkdir()
    with pytest.raises(ValueError, match=r"'w' keeps its data in an external file"):
        fo.load(write(sub, m))


def test_graph_shapes_that_are_not_chains(tmp_path):
    # a branch: x feeds two nodes that are added back together (a residual)
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r1"),
             helper.make_node("Sigmoid", ["x"], ["b"], name="s1"),
             helper.make_node("Add", ["a", "b"], ["y"], name="add")]
    with pytest.raises(ValueError, match=r"tensor 'x' feeds 2 nodes .*'r1' \(Relu\)"):
        fo.load(write(tmp_path, chain_model(nodes)))
    # a cycle off the chain, and a self-loop on it
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r"),
             helper.make_node("Relu", ["c"], ["d"], name="c1"),
             helper.make_node("Relu", ["d"], ["c"], name="c2")]
    with pytest.raises(ValueError, match=r"node 1 'c1' \(Relu\) is not on the chain"):
        fo.load(write(tmp_path, chain_model(nodes)))
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r"),
             helper.make_node("Relu", ["a"], ["a"], name="loop")]
    with pytest.raises(ValueError, match=r"cycle through node 1 'loop'"):
        fo.load(write(tmp_path, chain_model(nodes)))
    # a dead end before the output
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="r")]
    with pytest.raises(ValueError, match=r"tensor 'a' is used by no node"):
        fo.load(write(tmp_path, chain_model(nodes)))
    # two data inputs
    two = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in "xz"]
    nodes = [helper.make_node("Add", ["x", "z"], ["y"])]
    with pytest.raises(ValueError, match=r"exactly one data input .* got 2"):
        fo.load(write(tmp_path, chain_model(nodes, inputs=two)))


def test_unsupported_nodes_are_named(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="first"),
             helper.make_node("Abs", ["a"], ["y"], name="odd")]
    with pytest.raises(ValueError, match=r"node 1 'odd' \(Abs\): operator Abs is not supported"):
        fo.load(write(tmp_path, chain_model(nodes)))
    nodes = [helper.make_node("LeakyRelu", ["x"], ["y"], name="lr", alpha=0.1, beta=2.0)]
    with pytest.raises(ValueError, match=r"node 0 'lr' \(LeakyRelu\): attribute 'beta'"):
        fo.load(write(tmp_path, chain_model(nodes)))
    x7 = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 7, 7])]
    xs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, "H", "W"])]
    w = numpy_helper.from_array(np.ones((2, 1, 2, 2), np.float32), "w")
    refused = [
        # padding as wide as the window: a window of padding only
        (helper.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[2, 2],
                          pads=[2, 0, 0, 0]), x7,
         r"node 0 'mp' \(MaxPool\): attribute pads=\[2, 0, 0, 0\]: padding 2 on spatial axis 0 "
         r"is not smaller than the dilated window 2"),
        (helper.make_node("AveragePool", ["x"], ["y"], name="ap", kernel_shape=[3, 3],
                          pads=[0, 3, 0, 0]), x7,
         r"padding 3 on spatial axis 1 is not smaller than the window 3"),
        # SAME at stride 2 depends on the size, which is symbolic here
        (helper.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[3, 3],
                          strides=[2, 2], auto_pad="SAME_LOWER"), xs,
         r"auto_pad=SAME_LOWER with stride 2 needs the input's spatial size"),
        (helper.make_node("Conv", ["x", "w"], ["y"], name="cv", pads=[0, -1, 0, 0]), x7,
         r"node 0 'cv' \(Conv\): attribute pads=\[0, -1, 0, 0\]: negative padding"),
        (helper.make_node("Conv", ["x", "w"], ["y"], name="cv", pads=[0, 0, 0]), x7,
         r"attribute pads=\[0, 0, 0\] should have 4 values"),
    ]
    for node, inputs, pattern in refused:
        with pytest.raises(ValueError, match=pattern):
            fo.load(write(tmp_path, chain_model([node], [w], inputs=inputs)))
    # SAME_UPPER on a 2-D convolution is fastconv's 'same' at any stride: worked
    # out per call, so right for the symbolic sizes too
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="cv", strides=[2, 2],
                              auto_pad="SAME_UPPER")]
    model = fo.load(write(tmp_path, chain_model(nodes, [w], inputs=xs)))
    assert model.layers[0].padding == "same"
    # weights fed at run time are not parameters
    nodes = [helper.make_node("Conv", ["x", "wx"], ["y"], name="cv")]
    with pytest.raises(ValueError, match=r"input 'wx' is neither an initializer"):
        fo.load(write(tmp_path, chain_model(nodes, inputs=x7)))
    # float16 input
    xh = [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 4])]
    with pytest.raises(ValueError, match=r"element type FLOAT16"):
        fo.load(write(tmp_path, chain_model([helper.make_node("Relu", ["x"], ["y"])], inputs=xh)))


# (operator, one sample's shape, weight shape or None, attributes): the attributes
# the kernel features of issue #13 made loadable, each checked against ONNX Runtime
NODE_FEATURES = [
    ("MaxPool", (1, 8, 8), None, dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1,
                                      pads=[0, 0, 1, 1])),
    ("MaxPool", (2, 7, 7), None, dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)),
    ("MaxPool", (2, 9, 8), None, dict(kernel_shape=[3, 2], strides=[2, 3], dilations=[2, 3],
                                      pads=[2, 0, 1, 1], ceil_mode=1)),
    ("MaxPool", (2, 7, 7), None, dict(kernel_shape=[3, 3], strides=[2, 2],
                                      auto_pad="SAME_LOWER")),
    ("AveragePool", (2, 7, 7), None, dict(kernel_shape=[3, 3], strides=[2, 2],
                                          pads=[2, 0, 1, 2], ceil_mode=1)),
    ("AveragePool", (2, 7, 7), None, dict(kernel_shape=[3, 3], strides=[2, 2],
                                          pads=[2, 0, 1, 2], ceil_mode=1, count_include_pad=1)),
    ("AveragePool", (2, 6, 6), None, dict(kernel_shape=[3, 3], strides=[2, 2],
                                          auto_pad="SAME_UPPER")),
    ("Conv", (2, 7, 7), (3, 2, 2, 2), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ("Conv", (2, 7, 7), (3, 2, 3, 2), dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    ("Conv", (2, 7, 6), (4, 1, 3, 3), dict(strides=[2, 1], pads=[0, 2, 1, 1], group=2)),
    ("Conv", (2, 11), (3, 2, 3), dict(strides=[2], pads=[2, 1], dilations=[2])),
    ("Conv", (2, 11), (3, 2, 4), dict(strides=[3], auto_pad="SAME_LOWER")),
    ("Conv", (2, 11), (3, 2, 4), dict(auto_pad="SAME_UPPER")),
    ("MaxPool", (2, 11), None, dict(kernel_shape=[3], strides=[2], pads=[2, 0], dilations=[2],
                                    ceil_mode=1)),
    ("AveragePool", (2, 11), None, dict(kernel_shape=[4], strides=[3], pads=[1, 3],
                                        ceil_mode=1)),
    ("AveragePool", (2, 11), None, dict(kernel_shape=[4], strides=[3], pads=[3, 1],
                                        ceil_mode=1, count_include_pad=1)),
]


@pytest.mark.parametrize("op, shape, wshape, attrs", NODE_FEATURES)
def test_padding_ceil_mode_dilation_and_1d_nodes_match_onnx_runtime(tmp_path, op, shape,
                                                                   wshape, attrs):
    rng = np.random.default_rng(4)
    inits, inputs = [], ["x"]
    if wshape is not None:
        inits = [numpy_helper.from_array(rng.standard_normal(wshape).astype(np.float32), "w"),
                 numpy_helper.from_array(rng.standard_normal(wshape[0]).astype(np.float32),
                                         "b")]
        inputs += ["w", "b"]
    node = helper.make_node(op, inputs, ["y"], name="n", **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = write(tmp_path, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    x = rng.standard_normal((3, *shape)).astype(np.float32)
    ort = pytest.importorskip("onnxruntime")
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    model = fo.load(path)
    one_d = {"Conv": nn.Conv1d, "MaxPool": nn.MaxPool1d, "AveragePool": nn.AvgPool1d}
    two_d = {"Conv": nn.Conv2d, "MaxPool": nn.MaxPool2d, "AveragePool": nn.AvgPool2d}
    assert [type(m) for m in model.layers] == [(one_d if len(shape) == 2 else two_d)[op]]
    got = eval_out(model, x)
    assert got.shape == want.shape
    close(got, want)


def test_flatten_on_another_axis(tmp_path):
    # Flatten(axis=2) of (N, 1, 4, 5) is (N, 20), Flatten(axis=1)'s result
    x1 = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 5])]
    nodes = [helper.make_node("Flatten", ["x"], ["y"], name="f", axis=2)]
    model = fo.load(write(tmp_path, chain_model(nodes, inputs=x1)))
    x = np.arange(40, dtype=np.float32).reshape(2, 1, 4, 5)
    np.testing.assert_array_equal(eval_out(model, x), x.reshape(2, 20))
    assert model.layers[0].axis == 1  # one row per sample: the plain Flatten
    # of (N, 3, 4, 5) it is (3N, 20), and axis 0 (or -4) gives one row: the rows are
    # not the samples, and predict runs the whole input as one batch
    x3 = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 5])]
    x = np.arange(120, dtype=np.float32).reshape(2, 3, 4, 5)
    for axis, want in ((2, x.reshape(6, 20)), (0, x.reshape(1, 120)), (-4, x.reshape(1, 120)),
                       (-1, x.reshape(24, 5)), (4, x.reshape(120, 1))):
        nodes = [helper.make_node("Flatten", ["x"], ["y"], name="f", axis=axis)]
        model = fo.load(write(tmp_path, chain_model(nodes, inputs=x3)))
        np.testing.assert_array_equal(eval_out(model, x), want)
        model.loss = nn.MSELoss()  # predict's raw outputs, in batches of one sample
        np.testing.assert_array_equal(model.predict(x, batch_size=1), want)
    nodes = [helper.make_node("Flatten", ["x"], ["y"], name="f", axis=5)]
    with pytest.raises(ValueError, match=r"node 0 'f' \(Flatten\): attribute axis=5 is out of"):
        fo.load(write(tmp_path, chain_model(nodes, inputs=x3)))


# -- several outputs, batch-wide layers, integer input (the rest of issue #13) -------
def graph_model(nodes, inits, x_shape, outputs, elem=TensorProto.FLOAT, opset=17):
    """A model whose graph outputs are the tensors named in ``outputs`` (a name, or a
    (name, element type) pair where a runtime needs the type)."""
    inputs = [helper.make_tensor_value_info("x", elem, list(x_shape))]
    outs = [helper.make_tensor_value_info(*((n, TensorProto.UNDEFINED) if isinstance(n, str)
                                            else n), None) for n in outputs]
    graph = helper.make_graph(nodes, "g", inputs, outs, list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def onnx_reference(proto, x, name="x"):
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(proto).run(None, {name: x})


@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("rank", [4, 3])
def test_maxpool_indices_output_over_several_planes(tmp_path, rank, order):
    # N and C > 1: the flat index counts the planes before (the node cases have one)
    k = [3, 2] if rank == 4 else [3]
    attrs = dict(kernel_shape=k, strides=[2] * len(k), pads=[1] * (2 * len(k)))
    if rank == 4:
        attrs["storage_order"] = order
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["y", "i"], name="mp", **attrs)]
    shape = (3, 2, 7, 6) if rank == 4 else (3, 2, 9)
    proto = graph_model(nodes, [], ["N"] + list(shape[1:]),
                        [("y", TensorProto.FLOAT), ("i", TensorProto.INT64)])
    model = fo.load(write(tmp_path, proto))
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want = onnx_reference(proto, x)
    model.eval()
    got = model(x)
    assert isinstance(got, tuple) and len(got) == 2
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    assert got[1].dtype == np.int64
    # predict: the same pair, whatever batch_size (the indices count earlier samples)
    for a, b in zip(model.predict(x, batch_size=1), want):
        np.testing.assert_array_equal(a, b)
    path = tmp_path / "saved.npz"
    model.save(path)
    again = fastconv.load_model(path)
    again.eval()
    np.testing.assert_array_equal(again(x)[1], want[1])
    if rank == 4:
        ort = pytest.importorskip("onnxruntime")
        ort_out = ort.InferenceSession(proto.SerializeToString()).run(None, {"x": x})
        np.testing.assert_array_equal(got[1], ort_out[1])


def test_dropout_mask_and_batchnorm_training_outputs(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 5, 2)).astype(np.float32)
    inits = [numpy_helper.from_array(v.astype(np.float32), n) for n, v in
             (("s", rng.random(3) + 0.5), ("b", rng.standard_normal(3)),
              ("m", rng.standard_normal(3)), ("v", rng.random(3) + 0.5))]
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"],
                              ["y", "rm", "rv"], name="bn", training_mode=1, momentum=0.8,
                              epsilon=1e-3)]
    proto = graph_model(nodes, inits, ["N", 3, 5, 2], ["y", "rm", "rv"], opset=15)
    model = fo.load(write(tmp_path, proto))
    want = onnx_reference(proto, x)
    model.eval()
    got = model(x)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the graph normalises with the batch's statistics: predict runs one batch
    for a, b in zip(model.predict(x, batch_size=1), got):
        np.testing.assert_array_equal(a, b)
    # training mode with only Y: batch statistics, one output, not folded
    nodes[0].output[:] = ["y"]
    proto = graph_model(nodes, inits, ["N", 3, 5, 2], ["y"], opset=15)
    model = fo.load(write(tmp_path, proto), fold_batchnorm=True)
    np.testing.assert_allclose(eval_out(model, x), want[0], rtol=1e-5, atol=1e-6)
    # inference Dropout with its mask: the identity and an all-true mask
    ratio = numpy_helper.from_array(np.array(0.3, np.float32), "ratio")
    nodes = [helper.make_node("Dropout", ["x", "ratio"], ["y", "mask"], name="do")]
    proto = graph_model(nodes, [ratio], ["N", 3, 5, 2], ["y", "mask"])
    model = fo.load(write(tmp_path, proto))
    model.eval()
    y, mask = model(x)
    np.testing.assert_array_equal(y, x)
    assert mask.dtype == np.bool_ and mask.all() and mask.shape == x.shape


def test_several_outputs_refused_where_they_cannot_be_returned(tmp_path):
    shape = ["N", 2, 6, 6]
    pool = dict(kernel_shape=[2, 2])
    # the indices of a pool in the middle of the chain
    nodes = [helper.make_node("MaxPool", ["x"], ["p", "i"], name="mp", **pool),
             helper.make_node("Relu", ["p"], ["y"], name="relu")]
    with pytest.raises(ValueError, match=r"node 0 'mp' \(MaxPool\): its output 1 'i' is a "
                                         r"graph output; fastconv returns the extra outputs of "
                                         r"the last node only"):
        fo.load(write(tmp_path, graph_model(nodes, [], shape, ["y", "i"])))
    # the outputs in another order than the node's
    nodes = [helper.make_node("MaxPool", ["x"], ["y", "i"], name="mp", **pool)]
    with pytest.raises(ValueError, match=r"node 0 'mp' \(MaxPool\): the graph outputs \['y', "
                                         r"'y'\] are not this node's outputs"):
        fo.load(write(tmp_path, graph_model(nodes, [], shape, ["y", "y"])))
    # an operator with one output asked for two
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    with pytest.raises(ValueError, match=r"node 0 'relu' \(Relu\): the graph outputs"):
        fo.load(write(tmp_path, graph_model(nodes, [], shape, ["y", "z"])))
    # BatchNormalization: two of three training outputs, or outputs in inference mode
    inits = [numpy_helper.from_array(np.ones(2, np.float32), n) for n in "sbmv"]
    for mode in (1, 0):
        nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"],
                                  ["y", "rm"], name="bn", training_mode=mode)]
        with pytest.raises(ValueError, match=r"node 0 'bn' \(BatchNormalization\): 2 outputs: "
                                             r"only Y, or with attribute training_mode=1"):
            fo.load(write(tmp_path, graph_model(nodes, inits, shape, ["y", "rm"], opset=15)))
    nodes = [helper.make_node("MaxPool", ["x"], ["y", "i"], name="mp", storage_order=2, **pool)]
    with pytest.raises(ValueError, match=r"attribute storage_order=2 must be 0 or 1"):
        fo.load(write(tmp_path, graph_model(nodes, [], shape, ["y", "i"])))
    # a model with several outputs trains and evaluates nothing: said, not crashed
    nodes = [helper.make_node("MaxPool", ["x"], ["y", "i"], name="mp", **pool)]
    model = fo.load(write(tmp_path, graph_model(nodes, [], shape, ["y", "i"])))
    model.loss = nn.MSELoss()
    with pytest.raises(ValueError, match=r"evaluate: the model returns 2 arrays \(its last "
                                         r"layer MaxPool2d"):
        model.evaluate(np.zeros((2, 2, 6, 6), np.float32), np.zeros((2, 2, 3, 3), np.float32))
    # and export writes one output per sample
    with pytest.raises(ValueError, match=r"export: layer 0 \(MaxPool2d\) returns 2 arrays"):
        fo.export(model, tmp_path / "back.onnx", input_shape=(2, 6, 6))


def test_gemm_transposed_input_and_per_row_bias(tmp_path):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((5, 3)).astype(np.float32)  # (K=5, M=3) with transA
    b = numpy_helper.from_array(rng.standard_normal((4, 5)).astype(np.float32), "b")
    for c_shape in [(3, 4), (3, 1), (1, 4), (4,), ()]:
        c = numpy_helper.from_array(rng.standard_normal(c_shape).astype(np.float32), "c")
        nodes = [helper.make_node("Gemm", ["x", "b", "c"], ["y"], name="g", transA=1,
                                  transB=1, alpha=0.5, beta=2.0)]
        proto = graph_model(nodes, [b, c], ["K", 3], ["y"])
        model = fo.load(write(tmp_path, proto))
        want = onnx_reference(proto, a)[0]
        close(eval_out(model, a), want)
        model.loss = nn.MSELoss()  # predict's raw outputs
        np.testing.assert_array_equal(model.predict(a, batch_size=2), eval_out(model, a))
    # not transposed, C of one row per sample: the rows are fixed to C's
    c = numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "c")
    nodes = [helper.make_node("Gemm", ["x", "b", "c"], ["y"], name="g", transB=1)]
    proto = graph_model(nodes, [b, c], ["N", 5], ["y"])
    model = fo.load(write(tmp_path, proto))
    x = rng.standard_normal((3, 5)).astype(np.float32)
    close(eval_out(model, x), onnx_reference(proto, x)[0])
    assert type(model.layers[0]) is nn.Gemm
    with pytest.raises(ValueError, match=r"Gemm: bias of shape \(3, 4\) needs 3 output rows, "
                                         r"the input \(2, 5\) gives 2"):
        eval_out(model, x[:2])
    # it trains (the gradients by central differences) and saves
    layer = model.layers[0]
    model.train()
    y = model(x)
    g = rng.standard_normal(y.shape).astype(np.float32)
    model.zero_grad() if hasattr(model, "zero_grad") else None
    layer.weight.grad[...] = 0
    layer.bias.grad[...] = 0
    model.backward(g)
    np.testing.assert_allclose(layer.bias.grad, g, rtol=1e-6)
    np.testing.assert_allclose(layer.weight.grad, g.T @ x, rtol=1e-5, atol=1e-5)
    path = tmp_path / "gemm.npz"
    model.save(path)
    close(eval_out(fastconv.load_model(path), x), onnx_reference(proto, x)[0])
    # C that does not broadcast to (M, N)
    c = numpy_helper.from_array(np.ones((3, 2), np.float32), "c")
    proto = graph_model(nodes, [b, c], ["N", 5], ["y"])
    with pytest.raises(ValueError, match=r"node 0 'g' \(Gemm\): input C of shape \(3, 2\) does "
                                         r"not broadcast to \(M, 4\)"):
        fo.load(write(tmp_path, proto))


def test_softmax_over_the_batch_axis(tmp_path):
    for op in ("Softmax", "LogSoftmax"):
        nodes = [helper.make_node(op, ["x"], ["y"], name="sm", axis=0)]
        proto = graph_model(nodes, [], ["N", 4], ["y"])
        model = fo.load(write(tmp_path, proto))
        x = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
        want = onnx_reference(proto, x)[0]
        close(eval_out(model, x), want)
        model.loss = nn.MSELoss()  # predict's raw outputs
        close(model.predict(x, batch_size=2), want)
    # a negative axis that lands on the batch axis is refused by the layer (write 0)
    with pytest.raises(ValueError, match=r"Softmax: axis=-2 is the batch axis of input of shape "
                                         r"\(5, 4\); write axis=0"):
        nn.Sequential(nn.Softmax(axis=-2)).predict(np.ones((5, 4), np.float32))


def test_integer_input_through_max_pooling(tmp_path):
    rng = np.random.default_rng(4)
    for elem, dtype in ((TensorProto.UINT8, np.uint8), (TensorProto.INT8, np.int8),
                        (TensorProto.INT16, np.int16)):
        # (no padding: onnx's reference pads integers with a NaN cast to them)
        nodes = [helper.make_node("MaxPool", ["x"], ["p"], name="mp", kernel_shape=[2, 2],
                                  strides=[1, 2], ceil_mode=1),
                 helper.make_node("Flatten", ["p"], ["y"], name="fl")]
        proto = graph_model(nodes, [], ["N", 2, 5, 5], ["y"], elem=elem)
        model = fo.load(write(tmp_path, proto))
        info = np.iinfo(dtype)
        x = rng.integers(info.min, info.max, (3, 2, 5, 5), endpoint=True).astype(dtype)
        want = onnx_reference(proto, x)[0]
        got = eval_out(model, x)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(model.predict(x, batch_size=2), want)
    nodes = [helper.make_node("Sigmoid", ["x"], ["y"], name="sg")]
    with pytest.raises(ValueError, match=r"node 0 'sg' \(Sigmoid\): on UINT8 input: integer "
                                         r"graph inputs run through MaxPool, GlobalMaxPool"):
        fo.load(write(tmp_path, graph_model(nodes, [], ["N", 4], ["y"], elem=TensorProto.UINT8)))
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r")]
    with pytest.raises(ValueError, match=r"graph input 'x' has element type INT32; fastconv "
                                         r"models take FLOAT"):
        fo.load(write(tmp_path, graph_model(nodes, [], ["N", 4], ["y"], elem=TensorProto.INT32)))


def test_averagepool_dilations_load_and_export(tmp_path):
    x7 = ["N", 2, 9, 8]
    nodes = [helper.make_node("AveragePool", ["x"], ["y"], name="ap", kernel_shape=[3, 2],
                              strides=[2, 1], dilations=[2, 3], pads=[1, 0, 2, 1], ceil_mode=1,
                              count_include_pad=0)]
    proto = graph_model(nodes, [], x7, ["y"], opset=19)
    model = fo.load(write(tmp_path, proto))
    assert model.layers[0].dilation == (2, 3)
    x = np.random.default_rng(5).standard_normal((2, 2, 9, 8)).astype(np.float32)
    close(eval_out(model, x), onnx_reference(proto, x)[0])
    # written back from opset 19 on, refused before
    with pytest.raises(ValueError, match=r"layer 0 \(AvgPool2d\): dilation=\(2, 3\) needs "
                                         r"opset 19"):
        fo.export(model, tmp_path / "back.onnx", input_shape=(2, 9, 8), opset=17)
    back = fo.export(model, tmp_path / "back.onnx", input_shape=(2, 9, 8), opset=19)
    close(onnx_reference(back, x, "input")[0], eval_out(model, x))


def test_caps_are_checked_ints(tmp_path):
    path = write(tmp_path, gemm_model())
    for name, bad, exc in (("max_bytes", 1.5, TypeError), ("max_nodes", "10", TypeError),
                           ("max_elements", True, TypeError), ("max_nodes", 0, ValueError),
                           ("max_bytes", -1, ValueError)):
        with pytest.raises(exc, match=rf"fastconv.onnx.load: {name} must be"):
            fo.load(path, **{name: bad})
        if name != "max_bytes":
            with pytest.raises(exc, match=rf"fastconv.onnx.load: {name} must be"):
                fo.from_onnx(gemm_model(), **{name: bad})
    assert isinstance(fo.load(path, max_bytes=np.int64(10**6), max_nodes=np.int32(1)),
                      nn.Sequential)


def test_constant_shape_chains_are_bounded(tmp_path):
    # the pads chain is evaluated at load: a ConstantOfShape may not allocate
    # past max_elements, whatever the file asks
    dims = numpy_helper.from_array(np.array([1 << 40], np.int64), "dims")
    nodes = [helper.make_node("ConstantOfShape", ["dims"], ["big"], name="cos"),
             helper.make_node("Relu", ["x"], ["y"], name="r")]
    with pytest.raises(ValueError, match=r"node 0 'cos' \(ConstantOfShape\): shape "
                                         r"\[1099511627776\] is negative or has more than "
                                         r"max_elements=268435456"):
        fo.load(write(tmp_path, chain_model(nodes, [dims])))
    nodes[0] = helper.make_node("Cast", ["dims"], ["big"], name="c", to=TensorProto.STRING)
    with pytest.raises(ValueError, match=r"node 0 'c' \(Cast\): attribute to=STRING"):
        fo.load(write(tmp_path, chain_model(nodes, [dims])))


def test_matmul_add_is_one_linear(tmp_path):
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "w")
    b = numpy_helper.from_array(np.array([1, 2, 3], np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])]
    model = fo.load(write(tmp_path, chain_model(nodes, [w, b])))
    assert [type(m) for m in model.layers] == [nn.Linear]
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    close(eval_out(model, x), x @ np.arange(12, dtype=np.float32).reshape(4, 3) + [1, 2, 3])


def test_transposed_constant_weight(tmp_path):
    # older torch.onnx: Linear without bias as MatMul(x, Transpose(W))
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    nodes = [helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0], name="t"),
             helper.make_node("MatMul", ["x", "wt"], ["y"], name="mm")]
    model = fo.load(write(tmp_path, chain_model(nodes, [numpy_helper.from_array(w, "w")])))
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    close(eval_out(model, x), x @ w.T)
    nodes[0] = helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 1], name="t")
    with pytest.raises(ValueError, match=r"node 0 't' \(Transpose\): attribute perm=\[1, 1\]"):
        fo.load(write(tmp_path, chain_model(nodes, [numpy_helper.from_array(w, "w")])))


# -- fastconv.onnx as an attribute of fastconv ------------------------------------
def test_fastconv_onnx_loads_on_first_use_and_onnx_stays_the_real_package(tmp_path):
    # a fresh interpreter: this test session has imported fastconv.onnx already
    import subprocess
    import sys

    code = (
        "import sys, fastconv\n"
        "assert 'fastconv.onnx' not in sys.modules, 'import fastconv should not load onnx'\n"
        "assert 'onnx' in dir(fastconv)\n"
        "from fastconv import nn\n"
        "m = nn.Sequential([nn.Flatten(), nn.Linear(4, 2)])\n"
        "fastconv.onnx.export(m, sys.argv[1], input_shape=(4,))\n"
        "import onnx\n"
        "assert onnx.__file__ != fastconv.onnx.__file__ and hasattr(onnx, 'ModelProto')\n"
        "print(type(fastconv.onnx.load(sys.argv[1])).__name__)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.onnx")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "Sequential"


# -- the padding and size arithmetic of the loader, against ONNX Runtime -------------
def _run_1d(op, x, w=None, reference=False, **attrs):
    """ONNX Runtime's (or ONNX's reference evaluator's) output of one 1-D ``op`` node."""
    inputs = ["x"] + (["w"] if w is not None else [])
    inits = [numpy_helper.from_array(w, "w")] if w is not None else []
    graph = helper.make_graph(
        [helper.make_node(op, inputs, ["y"], **attrs)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if reference:
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(model).run(None, {"x": x})[0]
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


@pytest.mark.parametrize("auto", ["SAME_UPPER", "SAME_LOWER"])
def test_auto_pad_sides_are_onnx_runtimes(auto):
    # the per-side padding the loader works out for auto_pad gives, as explicit
    # pads, exactly the runtime's own auto_pad output (a random weight makes every
    # shift of a window visible). ONNX Runtime refuses dilation with auto_pad
    # SAME, so dilated cases go to ONNX's reference evaluator.
    from fastconv.onnx._ops import _same_pads

    rng = np.random.default_rng(0)
    for n in range(1, 10):
        x = rng.standard_normal((1, 1, n)).astype(np.float32)
        for k in range(1, 5):
            w = rng.standard_normal((1, 1, k)).astype(np.float32)
            for s in (1, 2, 3):
                for d in (1, 2, 3):
                    before, after = _same_pads(auto, n, k, s, d)
                    kw = dict(strides=[s], dilations=[d], reference=d > 1)
                    want = _run_1d("Conv", x, w, auto_pad=auto, **kw)
                    got = _run_1d("Conv", x, w, pads=[before, after], **kw)
                    assert got.shape == want.shape == (1, 1, -(-n // s)), (n, k, s, d)
                    np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=str((n, k, s, d)))


def test_ceil_mode_output_length_is_onnx_runtimes():
    # PyTorch's rule (the last window must start inside the input or the leading
    # padding) is ONNX Runtime's, including the case where rounding up is undone
    from fastconv.onnx._ops import _out_len

    x = np.zeros((1, 1, 12), np.float32)
    checked = 0
    for n in range(1, 10):
        for k in range(1, 4):
            for s in (1, 2, 3):
                for before in range(k):
                    for after in range(k):
                        if n + before + after < k:
                            continue
                        for ceil in (0, 1):
                            y = _run_1d("MaxPool", x[..., :n], kernel_shape=[k], strides=[s],
                                        pads=[before, after], ceil_mode=ceil)
                            assert _out_len(n, k, s, 1, before, after, bool(ceil)) \
                                == y.shape[2], (n, k, s, before, after, ceil)
                            checked += 1
    assert checked > 300


# -- the layers behind those graphs, on their own ------------------------------------
def test_batchnorm_batch_statistics_in_evaluation_as_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(6).standard_normal((4, 3, 5, 5))
    ours = nn.BatchNorm2d(3, momentum=0.2, track_running_stats=False, dtype=np.float64)
    theirs = torch.nn.BatchNorm2d(3, momentum=0.2, track_running_stats=False).double()
    ours.weight.data[...] = [0.5, 1.5, 2.0]
    with torch.no_grad():
        theirs.weight[...] = torch.tensor([0.5, 1.5, 2.0])
    ours.eval()
    theirs.eval()
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = theirs(xt)
    ours.needs_input_grad = True
    y = ours.forward(x)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(7).standard_normal(y.shape)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(ours.backward(g), xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(ours.running_mean, 0)  # left alone
    # the running statistics ONNX's training mode writes, returned
    bn = nn.BatchNorm1d(3, momentum=0.25, track_running_stats=False, return_running_stats=True,
                        dtype=np.float64)
    bn.running_mean[...] = [1.0, 2.0, 3.0]
    z = x[:, :, 0, 0]
    _, rm, rv = bn.forward(z)
    np.testing.assert_allclose(rm, 0.75 * bn.running_mean + 0.25 * z.mean(0), rtol=1e-14)
    np.testing.assert_allclose(rv, 0.75 * 1.0 + 0.25 * z.var(0), rtol=1e-14)
    for kw, exc, match in (
            (dict(return_running_stats=True), ValueError,
             r"BatchNorm2d: return_running_stats=True .* needs track_running_stats=False and a "
             r"float momentum"),
            (dict(track_running_stats=False, return_running_stats=True, momentum=None),
             ValueError, r"needs track_running_stats=False and a float momentum"),
            (dict(track_running_stats="no"), TypeError,
             r"BatchNorm2d: track_running_stats must be a bool, got str")):
        with pytest.raises(exc, match=match):
            nn.BatchNorm2d(3, **kw)


@pytest.mark.parametrize("trans_a,bias_shape", [(True, (3, 4)), (True, None), (False, (3, 1)),
                                                (True, ())])
def test_gemm_layer_gradients_by_central_differences(trans_a, bias_shape):
    from oracle import numerical_grad

    rng = np.random.default_rng(8)
    layer = nn.Gemm(5, 4, trans_a=trans_a, bias=bias_shape is not None, bias_shape=bias_shape,
                    dtype=np.float64)
    layer.weight.data[...] = rng.standard_normal((4, 5))
    if layer.bias is not None:
        layer.bias.data[...] = rng.standard_normal(bias_shape)
    layer.needs_input_grad = True
    x = rng.standard_normal((5, 3) if trans_a else (3, 5))
    y = layer.forward(x)
    g = rng.standard_normal(y.shape)
    gx = layer.backward(g)
    loss = (lambda: float(np.sum(layer.forward(x) * g)))
    np.testing.assert_allclose(gx, numerical_grad(loss, x, eps=1e-6), atol=1e-7)
    np.testing.assert_allclose(layer.weight.grad, numerical_grad(loss, layer.weight.data,
                                                                 eps=1e-6), atol=1e-7)
    if layer.bias is not None:
        np.testing.assert_allclose(layer.bias.grad, numerical_grad(loss, layer.bias.data,
                                                                   eps=1e-6), atol=1e-7)
    assert layer._whole_batch == (trans_a or bias_shape == (3, 4) or bias_shape == (3, 1))


def test_onnx_form_layers_check_their_arguments():
    for call, exc, match in (
            (lambda: nn.Gemm(3, 4, bias_shape=(2, 3)), ValueError,
             r"Gemm: bias_shape \(2, 3\) does not broadcast to \(rows, 4\)"),
            (lambda: nn.Gemm(3, 4, bias_shape=(1, 2, 4)), ValueError,
             r"Gemm: bias_shape must be a tuple of at most 2 ints"),
            (lambda: nn.Gemm(3, 4, bias=None), TypeError, r"Gemm: bias must be a bool"),
            (lambda: nn.Gemm(3, 4, trans_a=1), TypeError, r"Gemm: trans_a must be a bool"),
            (lambda: nn.Gemm(3, 4, trans_a=True).forward(np.ones((4, 2), np.float32)),
             ValueError, r"Gemm: expected input of shape \(in_features, rows\) with "
                         r"in_features=3, got shape \(4, 2\)"),
            (lambda: nn.Cast("int64"), TypeError, r"Cast: dtype must be one of .* got int64"),
            (lambda: nn.Cast("pixels"), TypeError, r"Cast: dtype must be one of"),
            (lambda: nn.Flatten(axis=1.5), TypeError, r"Flatten: axis must be"),
            (lambda: nn.Flatten(axis=3).forward(np.ones((2, 3), np.float32)), ValueError,
             r"Flatten: axis=3 is out of range for input of shape \(2, 3\)"),
            (lambda: nn.Dropout(0.5, return_mask="yes"), TypeError,
             r"Dropout: return_mask must be a bool, got str")):
        with pytest.raises(exc, match=match):
            call()
    # Dropout's mask in training is where the element was kept
    d = nn.Dropout(0.5, rng=0, return_mask=True)
    x = np.ones((4, 6), np.float32)
    y, keep = d.forward(x)
    np.testing.assert_array_equal(keep, y != 0)
    assert 0 < keep.sum() < keep.size
    # Cast: integers through, gradient back in the input's float dtype
    c = nn.Cast("uint8")
    c.needs_input_grad = True
    out = c.forward(np.array([[3.0, 250.0]], np.float32))
    assert out.dtype == np.uint8 and out.tolist() == [[3, 250]]
    assert c.backward(np.ones((1, 2))).dtype == np.float32


def test_dask_predict_refuses_a_model_that_mixes_the_batch():
    da = pytest.importorskip("dask.array")
    import fastconv.dask

    model = nn.Sequential(nn.Flatten(axis=0))
    with pytest.raises(ValueError, match=r"fastconv.dask.predict: the model's output is not one "
                                         r"row per sample"):
        fastconv.dask.predict(model, da.zeros((4, 3), chunks=2))


def test_new_layer_settings_save_and_load(tmp_path):
    x = np.random.default_rng(9).standard_normal((3, 2, 4, 4)).astype(np.float32)
    models = [
        nn.Sequential(nn.Flatten(axis=2)),
        nn.Sequential(nn.Dropout(0.2, return_mask=True)),
        nn.Sequential(nn.BatchNorm2d(2, momentum=0.3, track_running_stats=False,
                                     return_running_stats=True)),
        nn.Sequential(nn.Cast("float64"), nn.MaxPool1d(2, return_indices=True,
                                                       indices_layout="flat_column")),
        nn.Sequential(nn.Flatten(), nn.Gemm(32, 5, trans_a=True, bias_shape=(3, 1), rng=1)),
        nn.Sequential(nn.Flatten(), nn.Gemm(32, 5, bias=False, rng=1)),
        nn.Sequential(nn.AvgPool2d(2, 1, dilation=(2, 1), count_include_pad=False)),
    ]
    for i, model in enumerate(models):
        xi = x.reshape(3, 2, 16) if i == 3 else x
        if i == 4:
            xi = x.reshape(3, 32).T.copy()  # (in_features, rows): the input transposed
        path = tmp_path / f"m{i}.npz"
        model.save(path)
        again = fastconv.load_model(path)
        assert [m.get_config() for m in again.layers] == [m.get_config() for m in model.layers]
        model.eval()
        again.eval()
        a, b = model(xi), again(xi)
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            np.testing.assert_array_equal(u, v)


def test_distributed_evaluate_refuses_a_model_that_mixes_the_batch():
    from fastconv import distributed

    model = nn.Sequential(nn.Flatten(), nn.Gemm(3, 2, trans_a=True, rng=0))
    model.loss = nn.MSELoss()
    with pytest.raises(ValueError, match=r"distributed.evaluate: the model's output is not one "
                                         r"row per sample"):
        distributed.evaluate(model, np.zeros((3, 4), np.float32), np.zeros((4, 2), np.float32))
    # the local evaluate runs it as one batch (here as many rows out as samples in)
    square = nn.Sequential(nn.Gemm(4, 2, trans_a=True, rng=0))
    square.loss = nn.MSELoss()
    x = np.random.default_rng(10).standard_normal((4, 4)).astype(np.float32)
    y = np.zeros((4, 2), np.float32)
    want = float(np.mean(eval_out(square, x) ** 2))
    assert square.evaluate(x, y, batch_size=1)["loss"] == pytest.approx(want, rel=1e-5)
