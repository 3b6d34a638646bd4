"""ONNX's own operator test cases through ``fastconv.onnx.from_onnx`` + inference.

The ``onnx`` package generates its node test cases (``test_conv_*``,
``test_maxpool_*``, ...: a one-node model, inputs and the reference outputs)
with ``onnx.backend.test.case.node.collect_testcases``; the wheels no longer
ship them as ``data/node/*/model.onnx`` files, so they are generated here (a
few seconds, once per run). Every case made only of the operators in ``OPS``
runs: either it loads and its output matches ONNX's reference within the
case's own tolerances, or it is listed in ``UNSUPPORTED`` with the reason and
the load must raise a ValueError saying so. A listed case that starts
loading, or an unlisted one that fails, fails this file, so the table cannot
rot. The counts are in docs/onnx.md.

Weights given as graph inputs in a case (Conv's W, Gemm's B and C, the batch
norm statistics, Dropout's ratio) are turned into initializers with the
case's values first: a fastconv model takes one data input and holds its
weights as parameters.
"""

import collections
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

import fastconv.onnx as fo  # noqa: E402
from fastconv import nn  # noqa: E402

OPS = {"Conv", "MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool", "Relu",
       "Softmax", "Gemm", "Flatten", "BatchNormalization", "Dropout"}

# Reasons, and the words the ValueError must contain for each.
THREE_D = ("3-D input (fastconv has 1-D and 2-D kernels)", r"3-D input \(rank 5\)")
TRAIN = ("training mode with a non-zero ratio: random masks drawn by the runtime",
         r"training_mode=True with ratio=0\.\d+ \(random masks")

UNSUPPORTED = {
    "test_averagepool_3d_default": THREE_D,
    "test_averagepool_3d_dilations_small": THREE_D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_True": THREE_D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_0_ceil_mode_is_False": THREE_D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_True": THREE_D,
    "test_averagepool_3d_dilations_large_count_include_pad_is_1_ceil_mode_is_False": THREE_D,
    "test_maxpool_3d_default": THREE_D,
    "test_maxpool_3d_dilations": THREE_D,
    "test_maxpool_3d_dilations_use_ref_impl": THREE_D,
    "test_maxpool_3d_dilations_use_ref_impl_large": THREE_D,
    "test_training_dropout_default": TRAIN,
    "test_training_dropout": TRAIN,
    "test_training_dropout_default_mask": TRAIN,
    "test_training_dropout_mask": TRAIN,
}


def _collect():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():  # other operators' generators warn about casts
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return {c.name: c for c in cases
            if c.model is not None and c.data_sets
            and {n.op_type for n in c.model.graph.node} <= OPS}


CASES = _collect()


def frozen(case):
    """The case's model with every graph input but the first made an initializer."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    inputs, _ = case.data_sets[0]
    for v, value in list(zip(model.graph.input, inputs))[1:]:
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), v.name))
    return model


def raw_outputs(model, x):
    """The model's evaluation-mode outputs, a tuple (``predict`` when that is the raw output).

    ``predict`` turns logits into probabilities unless the model ends in a
    Softmax; a one-node case's output is the raw operator output. A model whose
    graph has several outputs returns them as a tuple, from both.
    """
    if isinstance(model.layers[-1], nn.Softmax):
        y = model.predict(x)
    else:
        model.eval()
        with nn.no_grad():
            y = model(x)
    return y if isinstance(y, tuple) else (y,)


def assert_outputs_match(got, expected, rtol, atol):
    """Every output of the case: count, shape, dtype and values."""
    assert len(got) == len(expected)
    for i, (y, want) in enumerate(zip(got, expected)):
        want = np.asarray(want)
        assert y.shape == want.shape, f"output {i}"
        assert y.dtype == want.dtype, f"output {i}"
        np.testing.assert_allclose(y, want, rtol=rtol, atol=atol, err_msg=f"output {i}")


def test_cases_were_generated():
    # a silent empty parametrisation would pass everything
    assert len(CASES) >= 80, sorted(CASES)
    assert {n.op_type for c in CASES.values() for n in c.model.graph.node} == OPS


def test_table_names_existing_cases():
    missing = sorted(set(UNSUPPORTED) - set(CASES))
    assert not missing, f"UNSUPPORTED lists cases onnx no longer generates: {missing}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_node_case(name):
    case = CASES[name]
    model_proto = frozen(case)
    if name in UNSUPPORTED:
        reason, pattern = UNSUPPORTED[name]
        with pytest.raises(ValueError, match=pattern):
            fo.from_onnx(model_proto)
        return
    model = fo.from_onnx(model_proto)
    assert isinstance(model, nn.Sequential)
    assert len(case.model.graph.output) >= 1
    for inputs, expected in case.data_sets:
        x = np.asarray(inputs[0])
        assert_outputs_match(raw_outputs(model, x), expected, case.rtol, case.atol)
        if x.ndim < 2:
            continue  # predict takes (N, ...) with N samples of at least one value
        # predict in batches of one sample gives what one call on all of x gives:
        # a model whose output mixes the batch runs it as one batch
        whole, ones = model.predict(x), model.predict(x, batch_size=1)
        whole, ones = (v if isinstance(v, tuple) else (v,) for v in (whole, ones))
        for a, b in zip(whole, ones):
            np.testing.assert_array_equal(a, b)


# -- the PyTorch-converted cases (files shipped in the onnx wheel) ------------------
# onnx/backend/test/data/pytorch-{converted,operator}/test_*/model.onnx and
# test_data_set_*/{input,output}_0.pb: torch.nn modules and operators exported by
# an old torch.onnx. All run through fastconv.onnx.load (the file path, as a user
# would); those listed below must be refused for the reason given.
THREE_D_BN = ("3-D input (batch norm of rank 5)", r"input rank 5 is not supported")
NO_LAYER = ("an operator fastconv has no layer for", r"operator \w+ is not supported")
TWO_INPUTS = ("several data inputs", r"exactly one data input")
BRANCH = ("a branching graph (x used twice)", r"feeds 2 nodes")
RESHAPE = ("a Reshape that is not a flatten to (N, -1)", r"not a flatten to \(N, -1\)")
INT_INPUT = ("integer input (embedding indices)", r"element type INT64")
PAD = ("a Pad that is not zeros in front of a Conv or AveragePool (reflect, edge, a "
       "non-zero value, or the Pad alone)",
       r"Pad\): (attribute mode=|constant value .* is not zero|a Pad is loaded only in front)")
SPLIT = ("a node's second output used (Split)", r"output.*(is used|is a graph output)")

TORCH_UNSUPPORTED = {
    THREE_D: ["test_AvgPool3d", "test_AvgPool3d_stride", "test_AvgPool3d_stride1_pad0_gpu_input",
              "test_Conv3d", "test_Conv3d_dilated", "test_Conv3d_dilated_strided",
              "test_Conv3d_groups", "test_Conv3d_no_bias", "test_Conv3d_stride",
              "test_Conv3d_stride_padding", "test_MaxPool3d", "test_MaxPool3d_stride",
              "test_MaxPool3d_stride_padding"],
    THREE_D_BN: ["test_BatchNorm3d_eval", "test_BatchNorm3d_momentum_eval"],
    # AvgPool1d: Unsqueeze to 2-D first; the rest: ConvTranspose, PRelu, Selu, Split
    # (chunk: its two outputs are the graph's), ...
    NO_LAYER: ["test_AvgPool1d", "test_AvgPool1d_stride", "test_ConvTranspose2d",
               "test_ConvTranspose2d_no_bias", "test_PReLU_1d", "test_PReLU_1d_multiparam",
               "test_PReLU_2d", "test_PReLU_2d_multiparam", "test_PReLU_3d",
               "test_PReLU_3d_multiparam", "test_SELU", "test_Softmin", "test_Softplus",
               "test_operator_addconstant", "test_operator_clip", "test_operator_convtranspose",
               "test_operator_exp", "test_operator_index", "test_operator_permute2",
               "test_operator_reduced_mean", "test_operator_reduced_mean_keepdim",
               "test_operator_reduced_sum", "test_operator_reduced_sum_keepdim",
               "test_operator_repeat", "test_operator_selu", "test_operator_sqrt",
               "test_operator_symbolic_override", "test_operator_chunk"],
    TWO_INPUTS: ["test_operator_add_broadcast", "test_operator_add_size1_broadcast",
                 "test_operator_add_size1_right_broadcast",
                 "test_operator_add_size1_singleton_broadcast", "test_operator_addmm",
                 "test_operator_basic", "test_operator_concat2", "test_operator_max",
                 "test_operator_min", "test_operator_mm", "test_operator_pow",
                 "test_operator_symbolic_override_nested"],
    BRANCH: ["test_PoissonNLLLLoss_no_reduce", "test_Softsign", "test_operator_params"],
    RESHAPE: ["test_PixelShuffle", "test_operator_repeat_dim_overflow"],
    INT_INPUT: ["test_Embedding", "test_Embedding_sparse", "test_operator_non_float_params"],
    PAD: ["test_ConstantPad2d", "test_ReflectionPad2d", "test_ReplicationPad2d", "test_ZeroPad2d",
          "test_operator_pad"],
    SPLIT: ["test_GLU", "test_GLU_dim"],
}
TORCH_REASON = {name: reason for reason, names in TORCH_UNSUPPORTED.items() for name in names}


def _torch_cases():
    import glob
    import os

    root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    return {os.path.basename(d): d for kind in ("pytorch-converted", "pytorch-operator")
            for d in glob.glob(os.path.join(root, kind, "test_*"))
            if os.path.isfile(os.path.join(d, "model.onnx"))}


TORCH_CASES = _torch_cases()


def _read_pb(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


@pytest.mark.skipif(not TORCH_CASES, reason="this onnx wheel ships no pytorch-converted cases")
def test_torch_table_names_existing_cases():
    missing = sorted(set(TORCH_REASON) - set(TORCH_CASES))
    assert not missing, f"TORCH_UNSUPPORTED lists cases onnx no longer ships: {missing}"


@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_pytorch_converted_case(name):
    import glob
    import os

    folder = TORCH_CASES[name]
    path = os.path.join(folder, "model.onnx")
    if name in TORCH_REASON:
        with pytest.raises(ValueError, match=TORCH_REASON[name][1]):
            fo.load(path)
        return
    model = fo.load(path)
    sets = sorted(glob.glob(os.path.join(folder, "test_data_set_*")))
    assert sets
    for ds in sets:
        x = _read_pb(os.path.join(ds, "input_0.pb"))
        expected = _read_pb(os.path.join(ds, "output_0.pb"))
        (y,) = raw_outputs(model, x.astype(model.dtype))
        assert y.shape == expected.shape
        np.testing.assert_allclose(y, expected, rtol=1e-3, atol=1e-7)  # onnx's defaults


def summary():
    """(passed, {reason: count}) over the generated cases: the docs/onnx.md table."""
    counts = collections.Counter(UNSUPPORTED[n][0] for n in CASES if n in UNSUPPORTED)
    return sum(n not in UNSUPPORTED for n in CASES), dict(counts)


if __name__ == "__main__":  # python tests/test_onnx_node_cases.py: the docs table
    passed, by_reason = summary()
    print(f"node cases: {len(CASES)}: {passed} pass, {sum(by_reason.values())} unsupported")
    for reason, n in sorted(by_reason.items(), key=lambda kv: -kv[1]):
        print(f"| {reason} | {n} |")
    print(f"pytorch cases: {len(TORCH_CASES)}: {len(set(TORCH_CASES) - set(TORCH_REASON))} pass, "
          f"{len(TORCH_REASON)} unsupported")
    for reason, names in sorted(TORCH_UNSUPPORTED.items(), key=lambda kv: -len(kv[1])):
        print(f"| {reason[0]} | {len(names)} |")
