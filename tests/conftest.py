"""Shared pytest setup for the fastconv test-suite.

Deliberately does not touch sys.path: CI runs these tests against the
pip-installed package, and a repo-root import would hide a broken wheel.
(From a source checkout with an in-place build, ``python -m pytest`` already
finds ``fastconv`` through the current directory.)

Hypothesis profiles, chosen with ``FASTCONV_HYPOTHESIS_PROFILE``:

* ``fast`` (default): ~40 examples per property, for every run;
* ``long``: >= 100000 examples per property, an opt-in soak run
  (``FASTCONV_HYPOTHESIS_PROFILE=long python -m pytest tests/test_properties.py``).
"""

import os

import numpy as np
import pytest

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a test extra; only test_properties needs it
    settings = None
else:
    settings.register_profile("fast", max_examples=40, deadline=None)
    settings.register_profile(
        "long", max_examples=100_000, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.load_profile(os.environ.get("FASTCONV_HYPOTHESIS_PROFILE", "fast"))


def pytest_report_header(config):
    lines = []
    if settings is not None:
        lines.append(f"hypothesis profile: {settings.get_current_profile_name()}")
    try:
        import fastconv

        info = fastconv.info()
        lines.append(f"fastconv {fastconv.__version__} from {os.path.dirname(fastconv.__file__)}")
        lines.append("fastconv info: " + ", ".join(f"{k}={v}" for k, v in info.items()))
    except Exception as exc:  # the header must never stop the run
        lines.append(f"fastconv: not importable ({exc!r})")
    return lines


@pytest.fixture
def rng(request):
    """A generator seeded from the test id, so every test is reproducible alone."""
    seed = sum(map(ord, request.node.nodeid)) * 7919
    return np.random.default_rng(seed)


@pytest.fixture(autouse=True)
def _fixed_team():
    """Every test runs with the team controller fixed (each kernel call gets the
    team it asks for): on a busy machine the adaptive controller would run some
    2-thread calls on one thread, and a test comparing thread counts would then
    compare two serial runs and pass whatever the parallel code does. The
    controller's own tests switch it on (tests/test_threads.py, fixture `team`)."""
    try:
        from fastconv import _kernels
    except ImportError:  # reported by the header; the tests that need it fail on their own
        yield
        return
    _kernels.team_adaptive(False)
    yield
    _kernels.team_adaptive(False)


@pytest.fixture
def restore_threads():
    """Run a test that changes the thread count, then put the count back."""
    import fastconv

    before = fastconv.get_num_threads()
    yield
    fastconv.set_num_threads(before)


def _simd_levels():
    """The SIMD levels this CPU can run, lowest first."""
    try:
        import fastconv
        from fastconv import functional as F
    except ImportError:  # reported by the header; the tests that need it fail on their own
        return ["generic"]
    top = F._SIMD_NAMES[fastconv.info()["simd_supported"]]
    return [lv for lv in ("generic", "avx2", "avx512") if F._SIMD_NAMES[lv] <= top]


SIMD_LEVELS = _simd_levels()


@pytest.fixture(params=SIMD_LEVELS)
def simd(request):
    """Run a test once per SIMD level the CPU supports (forced), then restore the level."""
    from fastconv import functional as F

    before = F.simd_level()
    assert F.set_simd_level(request.param) == request.param
    yield request.param
    F.set_simd_level(before)


@pytest.fixture
def route_override():
    """Force driver route choices for one test (``_kernels.set_route_override``);
    every override is cleared afterwards."""
    from fastconv import _kernels

    names = []

    def force(name, value):
        _kernels.set_route_override(name, value)
        names.append(name)

    yield force
    for name in names:
        _kernels.set_route_override(name, None)
