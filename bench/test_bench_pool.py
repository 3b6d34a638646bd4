"""max_pool2d and avg_pool2d forward, backward and forward + backward, side by side.

Max-pool's forward+backward forward returns the indices (as training needs);
its forward alone does not.
"""

import pytest

from shapes import POOL_CASES

IMPLS = ["fastconv", "torch", "numpy", "naive"]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("threads", [1, 2], ids=lambda t: f"{t}T")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", list(POOL_CASES.values()), ids=lambda c: c.name)
@pytest.mark.parametrize("phase", ["fwd", "bwd", "fwdbwd"])
@pytest.mark.parametrize("op", ["maxpool", "avgpool"])
def test_pool(measure, op, phase, case, dtype, threads, impl):
    measure(impl, op, phase, case, dtype, threads)
