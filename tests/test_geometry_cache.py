"""The checked-geometry cache of conv calls (fastconv._geometry.conv_geom): calls
with the same arguments share one ConvGeom, and no argument that would be refused
gets past the checks by looking like a cached one (1.0 == True == 1 in Python)."""

import numpy as np
import pytest

import fastconv
from fastconv import _geometry


@pytest.fixture
def empty_cache():
    _geometry._GEOM_CACHE.clear()
    yield
    _geometry._GEOM_CACHE.clear()


def test_same_arguments_share_one_geometry(empty_cache):
    x = np.ones((2, 3, 9, 9), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    fastconv.conv2d(x, w, stride=2, padding=((1, 0), (0, 1)))
    assert len(_geometry._GEOM_CACHE) == 1
    (g,) = _geometry._GEOM_CACHE.values()
    fastconv.conv2d(x, w, stride=2, padding=((1, 0), (0, 1)))
    assert len(_geometry._GEOM_CACHE) == 1
    assert _geometry.conv_geom("conv2d", x.shape, w.shape, 2, ((1, 0), (0, 1)), 1, 1) is g
    fastconv.conv2d(x, w, stride=1)                 # other arguments: another entry
    assert len(_geometry._GEOM_CACHE) == 2


@pytest.mark.parametrize("name, bad", [("stride", True), ("stride", 1.0), ("dilation", True),
                                       ("padding", 1.0), ("padding", ((1, 1), (1.0, 1))),
                                       ("groups", True)])
def test_a_refused_argument_equal_to_a_cached_one_is_still_refused(empty_cache, name, bad):
    x = np.ones((1, 2, 6, 6), np.float32)
    w = np.ones((2, 2, 3, 3), np.float32)
    good = {"stride": 1, "dilation": 1, "padding": 1, "groups": 1}
    if name == "padding" and isinstance(bad, tuple):
        good["padding"] = ((1, 1), (1, 1))
    fastconv.conv2d(x, w, **good)
    fastconv.conv2d_backward(np.ones((1, 2, 6, 6), np.float32), x, w, **good)
    assert _geometry._GEOM_CACHE                    # the good call is cached ...
    with pytest.raises(TypeError, match=name):      # ... and the equal bad one refused
        fastconv.conv2d(x, w, **{**good, name: bad})
    with pytest.raises(TypeError, match=name):
        fastconv.conv2d_backward(np.ones((1, 2, 6, 6), np.float32), x, w, **{**good, name: bad})


def test_the_cache_is_bounded(empty_cache):
    w = np.ones((1, 1, 1, 1), np.float32)
    for n in range(_geometry._GEOM_CACHE_MAX + 10):
        _geometry.conv_geom("conv2d", (n + 1, 1, 2, 2), w.shape, 1, 0, 1, 1)
        assert len(_geometry._GEOM_CACHE) <= _geometry._GEOM_CACHE_MAX


@pytest.mark.parametrize("pool", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("name, bad", [("kernel_size", 2.0), ("kernel_size", True),
                                       ("stride", 2.0), ("padding", True)])
def test_pooling_refuses_what_equals_a_cached_argument(empty_cache, pool, name, bad):
    x = np.ones((1, 2, 6, 6), np.float32)
    good = {"kernel_size": 2, "stride": 2, "padding": 1}
    f = getattr(fastconv, pool)
    y = f(x, **good)
    assert any(k[0] == "pool" for k in _geometry._GEOM_CACHE)
    assert f(x, **good).tobytes() == y.tobytes()    # served from the cache
    with pytest.raises(TypeError, match=name):
        f(x, **{**good, name: bad})
