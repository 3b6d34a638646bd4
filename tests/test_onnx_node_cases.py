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
THREE_D = ("3-D input (until the kernel phase: 2-D kernels only)", r"3-D input \(rank 5\)")
ONE_D = ("1-D input (until the kernel phase: conv1d/pool1d)", r"1-D input \(rank 3\)")
CEIL = ("ceil_mode=1 that changes the output size (kernel phase)", r"ceil_mode=1")
ASYM = ("asymmetric pooling padding from auto_pad SAME (kernel phase)",
        r"auto_pad=SAME_(UPPER|LOWER) gives asymmetric padding")
BIGPAD = ("pooling padding above half the window (kernel phase)",
          r"larger than half the window")
PDIL = ("pooling dilation (kernel phase)", r"dilations=\[2, 2\]")
TRAIN = ("training mode: random masks drawn by the runtime", r"training_mode=True")
EXTRA = ("a second output (dropout mask, argmax indices, batch statistics)",
         r"its output 1 .* is a graph output")
FLAT = ("Flatten on an axis other than 1", r"Flatten keeps axis 0 only")
TRANSA = ("Gemm transA=1 (the batch axis transposed)", r"transA=1")
ROWBIAS = ("Gemm C that differs between batch rows", r"differs between batch rows")
BATCHAX = ("Softmax over the batch axis", r"axis=0 normalises across the batch axis")
UINT8 = ("uint8 input (fastconv models take float32/float64)", r"element type UINT8")

UNSUPPORTED = {
    "test_averagepool_1d_default": ONE_D,
    "test_maxpool_1d_default": ONE_D,
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
    "test_averagepool_2d_same_upper": ASYM,
    "test_averagepool_2d_same_lower": ASYM,
    "test_maxpool_2d_same_upper": ASYM,
    "test_maxpool_2d_same_lower": ASYM,
    "test_averagepool_2d_pads": BIGPAD,
    "test_averagepool_2d_pads_count_include_pad": BIGPAD,
    "test_maxpool_2d_pads": BIGPAD,
    "test_averagepool_2d_ceil": CEIL,
    "test_averagepool_2d_ceil_last_window_starts_on_pad": CEIL,
    "test_maxpool_2d_ceil": CEIL,
    "test_maxpool_2d_ceil_output_size_reduce_by_one": CEIL,
    "test_averagepool_2d_dilations": PDIL,
    "test_maxpool_2d_dilations": PDIL,
    "test_training_dropout_default": TRAIN,
    "test_training_dropout": TRAIN,
    "test_training_dropout_zero_ratio": TRAIN,
    "test_batchnorm_example_training_mode": EXTRA,
    "test_batchnorm_epsilon_training_mode": EXTRA,
    "test_dropout_default_mask": EXTRA,
    "test_dropout_default_mask_ratio": EXTRA,
    "test_training_dropout_default_mask": EXTRA,
    "test_training_dropout_mask": EXTRA,
    "test_training_dropout_zero_ratio_mask": EXTRA,
    "test_maxpool_with_argmax_2d_precomputed_pads": EXTRA,
    "test_maxpool_with_argmax_2d_precomputed_strides": EXTRA,
    "test_flatten_axis0": FLAT,
    "test_flatten_axis2": FLAT,
    "test_flatten_axis3": FLAT,
    "test_flatten_negative_axis4": FLAT,
    "test_flatten_negative_axis2": FLAT,
    "test_flatten_negative_axis1": FLAT,
    "test_gemm_transposeA": TRANSA,
    "test_gemm_all_attributes": TRANSA,
    "test_gemm_default_matrix_bias": ROWBIAS,
    "test_softmax_axis_0": BATCHAX,
    "test_maxpool_2d_uint8": UINT8,
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
    """The model's evaluation-mode output (``predict`` when that is the raw output).

    ``predict`` turns logits into probabilities unless the model ends in a
    Softmax; a one-node case's output is the raw operator output.
    """
    if isinstance(model.layers[-1], nn.Softmax):
        return model.predict(x)
    model.eval()
    with nn.no_grad():
        return model(x).copy()


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
    for inputs, expected in case.data_sets:
        y = raw_outputs(model, np.asarray(inputs[0]))
        assert y.shape == expected[0].shape
        np.testing.assert_allclose(y, expected[0], rtol=case.rtol, atol=case.atol)


def summary():
    """(passed, {reason: count}) over the generated cases: the docs/onnx.md table."""
    counts = collections.Counter(UNSUPPORTED[n][0] for n in CASES if n in UNSUPPORTED)
    return sum(n not in UNSUPPORTED for n in CASES), dict(counts)


if __name__ == "__main__":  # python tests/test_onnx_node_cases.py: the docs table
    passed, by_reason = summary()
    print(f"{len(CASES)} cases: {passed} pass, {sum(by_reason.values())} unsupported")
    for reason, n in sorted(by_reason.items(), key=lambda kv: -kv[1]):
        print(f"| {reason} | {n} |")
