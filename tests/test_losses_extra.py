"""BCEWithLogitsLoss, BCELoss and NLLLoss: values against torch, gradients by central differences."""

import numpy as np
import pytest

from fastconv import nn, optim
from fastconv.nn import losses

TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}


def numeric_grad(loss, x, target, h=1e-6):
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        g[i] = (loss.forward(xp, target) - loss.forward(xm, target)) / (2 * h)
    return g


def cases(rng):
    """(name, ours, torch function, output, target) for each loss."""
    z = rng.standard_normal((5, 3)) * 3
    z[0, 0], z[1, 1] = 40.0, -40.0            # far in the tails: no overflow, no log(0)
    t_bin = (rng.random((5, 3)) < 0.5).astype(np.float64)
    t_soft = rng.random((5, 3))
    p = 1 / (1 + np.exp(-rng.standard_normal((5, 3))))
    logp = z - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True)) - z.max(1, keepdims=True)
    labels = rng.integers(0, 3, 5)
    return [
        ("bce_logits_binary", losses.BCEWithLogitsLoss, "binary_cross_entropy_with_logits", z, t_bin),
        ("bce_logits_soft", losses.BCEWithLogitsLoss, "binary_cross_entropy_with_logits", z, t_soft),
        ("bce_probs", losses.BCELoss, "binary_cross_entropy", p, t_soft),
        ("nll", losses.NLLLoss, "nll_loss", logp, labels),
    ]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_values_and_gradients_match_torch(dtype, reduction, rng):
    torch = pytest.importorskip("torch")
    for name, cls, tname, out, target in cases(rng):
        out = out.astype(dtype)
        loss = cls(reduction=reduction)
        value = loss.forward(out, target)
        grad = loss.backward()
        assert grad.dtype == dtype and grad.shape == out.shape, name
        tout = torch.from_numpy(out.copy()).requires_grad_(True)
        ttarget = torch.from_numpy(np.asarray(target).copy())
        if tname != "nll_loss":
            ttarget = ttarget.to(tout.dtype)
        tval = getattr(torch.nn.functional, tname)(tout, ttarget, reduction=reduction)
        tval.backward()
        np.testing.assert_allclose(value, tval.item(), **TOL[dtype], err_msg=name)
        np.testing.assert_allclose(grad, tout.grad.numpy(), **TOL[dtype], err_msg=name)


def test_gradients_by_central_differences(rng):
    for name, cls, _, out, target in cases(rng):
        if name == "bce_logits_binary":
            out = np.clip(out, -8, 8)          # keep h small against the curvature
        if name == "bce_probs":
            out = np.clip(out, 0.05, 0.95)
        loss = cls()
        loss.forward(out, target)
        np.testing.assert_allclose(loss.backward(), numeric_grad(loss, out, target),
                                   rtol=1e-6, atol=1e-9, err_msg=name)


def test_bce_with_logits_is_stable_in_the_tails():
    z = np.array([[1000.0], [-1000.0], [1000.0], [-1000.0]])
    t = np.array([1.0, 0.0, 0.0, 1.0])       # (N,) target for a single-unit output
    loss = losses.BCEWithLogitsLoss(reduction="sum")
    assert loss.forward(z, t) == 2000.0       # log(1+exp(1000)) = 1000 exactly in floats
    np.testing.assert_array_equal(loss.backward().ravel(), [0.0, 0.0, 1.0, -1.0])


def test_names_resolve_through_compile():
    expected = {
        "bce_with_logits": losses.BCEWithLogitsLoss,
        "binary_cross_entropy_with_logits": losses.BCEWithLogitsLoss,
        "binary_crossentropy": losses.BCELoss, "bce": losses.BCELoss,
        "binary_cross_entropy": losses.BCELoss,
        "nll": losses.NLLLoss, "NLL_loss": losses.NLLLoss,
        "negative_log_likelihood": losses.NLLLoss,
    }
    for name, cls in expected.items():
        assert type(losses.get_loss(name)) is cls, name
    model = nn.Sequential([nn.Linear(3, 1)])
    model.compile(optimizer="sgd", loss="bce_with_logits")
    assert isinstance(model.loss, losses.BCEWithLogitsLoss)


def test_binary_model_trains_with_bce_with_logits(rng):
    x = rng.standard_normal((64, 2)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)
    model = nn.Sequential([nn.Linear(2, 1)])
    model.compile(optimizer=optim.Adam(lr=0.05), loss="bce_with_logits")
    hist = model.fit(x, y, epochs=20, batch_size=16, verbose=0, seed=0)
    assert hist.history["loss"][-1] < 0.7 * hist.history["loss"][0]


def test_errors_name_the_loss_and_what_was_wrong():
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"BCEWithLogitsLoss: target must have the output's "
                                         r"shape \(2, 3\).*got shape \(2,\)"):
        losses.BCEWithLogitsLoss().forward(z, np.zeros(2))
    with pytest.raises(ValueError, match=r"BCEWithLogitsLoss: target values must be in \[0, 1\]"):
        losses.BCEWithLogitsLoss().forward(z, np.full((2, 3), 2.0))
    with pytest.raises(ValueError, match="BCELoss: output must be probabilities in .*"
                                         "for logits use BCEWithLogitsLoss"):
        losses.BCELoss().forward(z - 1, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="NLLLoss: target must be integer class labels"):
        losses.NLLLoss().forward(z, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"NLLLoss: class labels must be in \[0, 3\)"):
        losses.NLLLoss().forward(z, np.array([0, 3]))
    for cls in (losses.BCEWithLogitsLoss, losses.BCELoss, losses.NLLLoss):
        with pytest.raises(RuntimeError, match="backward called before forward"):
            cls().backward()


def test_bce_on_saturated_probabilities_is_finite_like_torch():
    torch = pytest.importorskip("torch")
    p = np.array([[0.0, 1.0, 1.0, 0.0, 0.5]])
    t = np.array([[1.0, 0.0, 1.0, 0.0, 1.0]])
    loss = losses.BCELoss(reduction="sum")
    value = loss.forward(p, t)
    tp = torch.from_numpy(p.copy()).requires_grad_(True)
    tval = torch.nn.functional.binary_cross_entropy(tp, torch.from_numpy(t), reduction="sum")
    tval.backward()
    assert value == tval.item() == pytest.approx(200 + np.log(2))
    np.testing.assert_allclose(loss.backward(), tp.grad.numpy(), rtol=1e-12)
