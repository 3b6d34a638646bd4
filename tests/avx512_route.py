"""What the test modules of one AVX-512-only route share (test_conv_lanes,
test_grad_input_lanes, test_grad_weight_rows).

``skip_without_avx512(what)`` is the module's skip mark; ``restoring(override)``
makes its autouse fixture: each test runs at the AVX-512 level with Winograd off
(the direct kernels), and afterwards the level, the Winograd mode, the thread
count and the route's override are as they were.
"""

import pytest

import fastconv
from fastconv import _kernels
from fastconv import functional as F


def _has_avx512():
    level = F.simd_level()
    try:
        return F.set_simd_level("avx512") == "avx512"
    finally:
        F.set_simd_level(level)


def skip_without_avx512(what):
    return pytest.mark.skipif(not _has_avx512(), reason=f"{what} is AVX-512 only")


def restoring(override):
    @pytest.fixture(autouse=True)
    def _restore():
        level = F.simd_level()
        threads = fastconv.get_num_threads()
        F.set_simd_level("avx512")
        # these direct routes' layers (LeNet's conv2 and its like) would otherwise
        # take the row-Winograd route (test_winograd_rows.py), and a test comparing
        # this route with the implicit one would compare that route with itself
        winograd = F.set_winograd(False)
        yield
        F.set_winograd(winograd)
        _kernels.set_route_override(override, None)
        F.set_simd_level(level)
        fastconv.set_num_threads(threads)

    return _restore
