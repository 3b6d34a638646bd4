"""conv2d forward, backward (dX + dW + db) and forward + backward, side by side.

Each pytest-benchmark group is one (op, shape, dtype, threads); its rows are the
implementations. GFLOP per call is in each benchmark's extra_info.
"""

import pytest

from shapes import CONV_CASES

IMPLS = ["fastconv", "torch", "numpy", "naive"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("threads", [1, 2], ids=lambda t: f"{t}T")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(CONV_CASES.values()), ids=lambda c: c.name)
@pytest.mark.parametrize("phase", ["fwd", "bwd", "fwdbwd"])
def test_conv(measure, phase, case, dtype, threads, impl):
    measure(impl, "conv", phase, case, dtype, threads)
