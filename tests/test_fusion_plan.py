"""Layer fusion in a Sequential is decided once per layer list (fastconv.nn.fusion)."""

import numpy as np
import pytest

from fastconv import nn
from fastconv.nn import fusion, sequential
from fastconv.nn.relu import kernel_relu_propagates_nan

needs_fused_relu = pytest.mark.skipif(not kernel_relu_propagates_nan(),
                                      reason="the kernels' fused ReLU does not keep NaN")


def _net(dtype=np.float64):
    return nn.Sequential([
        nn.Conv2d(1, 3, 3, padding=1, rng=0, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(3, 2, 1, rng=1, dtype=dtype), nn.ReLU(), nn.Flatten(),
        nn.Linear(2 * 3 * 3, 4, rng=2, dtype=dtype)])


@needs_fused_relu
def test_steps_name_the_fused_pairs():
    layers = _net().layers
    assert fusion.forward_steps(layers) == (
        (0, True), (2, False), (3, True), (5, False), (6, False))
    assert fusion.backward_steps(layers) == (
        (6, False), (5, False), (4, False), (3, False), (2, True), (0, False))
    # switched off, every layer is a step of its own
    assert fusion.forward_steps(layers, conv_relu=False) == tuple((i, False) for i in range(7))
    assert fusion.backward_steps(layers, relu_pool=False) == tuple(
        (i, False) for i in range(6, -1, -1))
    # exact types only: a subclass may compute something else
    class MyReLU(nn.ReLU):
        pass
    assert fusion.forward_steps([layers[0], MyReLU()]) == ((0, False), (1, False))


def test_the_plan_is_made_once_and_again_only_when_the_layers_change(monkeypatch, rng):
    made = []

    class Counting(fusion.FusionPlan):
        def __init__(self, *args):
            made.append(args)
            super().__init__(*args)

    monkeypatch.setattr(sequential, "FusionPlan", Counting)
    model = _net()
    x = rng.standard_normal((2, 1, 6, 6))
    for _ in range(3):
        model.backward(np.ones_like(model(x)))
    assert len(made) == 1
    model.fuse_relu_pool = False
    model.backward(np.ones_like(model(x)))
    assert len(made) == 2
    model.layers[4] = nn.Tanh()  # the list edited in place
    model(x)
    assert len(made) == 3


def test_a_layer_replaced_in_place_is_not_fused_as_the_old_one(rng):
    # a stale plan would still run layer 0 with the ReLU fused in and hand
    # its output to the Tanh that replaced the ReLU
    model = _net().train()
    x = rng.standard_normal((2, 1, 6, 6))
    model(x)
    model.layers[1] = nn.Tanh()
    model.layers[1].reuse_buffers = True
    got = model(x)
    want = x
    for layer in model.layers:  # one by one: nothing fused
        want = layer.forward(want).copy()
    np.testing.assert_array_equal(got, want)


def test_fused_and_unfused_training_steps_give_the_same_bits(rng):
    x = rng.standard_normal((4, 1, 6, 6))
    y = np.array([0, 1, 2, 3])
    weights = []
    for fuse in (True, False):
        model = _net()
        model.fuse_conv_relu = model.fuse_relu_pool = fuse
        model.compile("sgd", "cross_entropy")
        model.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0)
        weights.append([p.data.copy() for p in model.parameters()])
    for a, b in zip(*weights):
        assert a.tobytes() == b.tobytes()
