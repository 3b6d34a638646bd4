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
    x4 = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])]
    nodes = [helper.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[2, 2],
                              ceil_mode=1, strides=[2, 2], pads=[0, 0, 1, 1])]
    with pytest.raises(ValueError, match=r"node 0 'mp' \(MaxPool\): attribute pads=\[0, 0, 1, 1\] "
                                         r"gives asymmetric padding"):
        fo.load(write(tmp_path, chain_model(nodes, inputs=x4)))
    nodes = [helper.make_node("MaxPool", ["x"], ["y"], name="mp", kernel_shape=[2, 2],
                              ceil_mode=1, strides=[2, 2])]
    # 8 is even: ceil and floor agree for a 2x2/2 window, so ceil_mode=1 is exact
    close(eval_out(fo.load(write(tmp_path, chain_model(nodes, inputs=x4))),
                   np.ones((1, 1, 8, 8), np.float32)), np.ones((1, 1, 4, 4), np.float32))
    x7 = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 7, 7])]
    with pytest.raises(ValueError, match=r"node 0 'mp' \(MaxPool\): attribute ceil_mode=1"):
        fo.load(write(tmp_path, chain_model(nodes, inputs=x7)))
    w = numpy_helper.from_array(np.ones((2, 1, 2, 2), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="cv", strides=[2, 2],
                              auto_pad="SAME_UPPER")]
    with pytest.raises(ValueError, match=r"node 0 'cv' \(Conv\): attribute auto_pad=SAME_UPPER "
                                         r"gives asymmetric padding"):
        fo.load(write(tmp_path, chain_model(nodes, [w], inputs=x7)))
    # at stride 1 SAME_UPPER is fastconv's 'same', even kernels included
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="cv", auto_pad="SAME_UPPER")]
    model = fo.load(write(tmp_path, chain_model(nodes, [w], inputs=x7)))
    assert model.layers[0].padding == "same"
    # weights fed at run time are not parameters
    nodes = [helper.make_node("Conv", ["x", "wx"], ["y"], name="cv")]
    with pytest.raises(ValueError, match=r"input 'wx' is neither an initializer"):
        fo.load(write(tmp_path, chain_model(nodes, inputs=x7)))
    # float16 input
    xh = [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 4])]
    with pytest.raises(ValueError, match=r"element type FLOAT16"):
        fo.load(write(tmp_path, chain_model([helper.make_node("Relu", ["x"], ["y"])], inputs=xh)))


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
