"""Thread teams: the limit on the thread count, and the controller that backs off
when helper threads are descheduled (csrc/fc_team.c).

Machine load is not reproducible, so the controller's tests make a helper look
late through the private hook ``_kernels.team_simulate_late`` instead, and
give the back-off a length (``team_reset(backoff_s)``) that a loaded machine
cannot outrun between two calls.
"""

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import fastconv
import fastconv.models
from fastconv import _kernels

from oracle import assert_bitwise_equal
from workloads import run_workload

needs_openmp = pytest.mark.skipif(not fastconv.openmp_enabled(),
                                  reason="a serial build has one thread")

# one conv2d with ~2.4e6 multiply-adds: far above the parallel cut-off (2e5)
X_SHAPE, W_SHAPE = (16, 6, 14, 14), (16, 6, 5, 5)


@pytest.fixture
def team():
    """Two threads and a controller with no history; all put back afterwards."""
    before = fastconv.get_num_threads()
    fastconv.set_num_threads(2)
    _kernels.team_adaptive(True)
    _kernels.team_reset()
    yield
    _kernels.team_simulate_late(0.0, 0)
    _kernels.team_reset()
    fastconv.set_num_threads(before)


@pytest.fixture
def conv_inputs(rng):
    x = rng.standard_normal(X_SHAPE).astype(np.float32)
    w = rng.standard_normal(W_SHAPE).astype(np.float32)
    return x, w


def stats():
    return fastconv.info()["team"]


def threads_used(x, w):
    """Run a conv2d; how many threads it really ran with."""
    fastconv.conv2d(x, w)
    return stats()["threads_last_call"]


# --------------------------------------------------------------------------
# The controller
# --------------------------------------------------------------------------

@needs_openmp
def test_info_reports_the_team(team, conv_inputs):
    s = stats()
    assert set(s) >= {"threads_last_call", "cap", "cap_left_s", "backoff_s",
                      "parallel_regions", "late_regions", "backoffs", "scout_late",
                      "adaptive"}
    assert s["cap"] == 0 and s["backoffs"] == 0 and s["adaptive"] is True
    assert threads_used(*conv_inputs) == 2
    assert stats()["parallel_regions"] >= 1
    fastconv.relu(np.ones(10, np.float32))  # far below the cut-off: serial
    assert stats()["threads_last_call"] == 1


def scout_decides(x, w, timeout=10.0):
    """Call conv2d until the scout's answer (a core free or not) decided the team."""
    late = stats()["scout_late"]
    end = time.monotonic() + timeout
    while True:
        n = threads_used(x, w)
        if n > 1 or stats()["scout_late"] > late or time.monotonic() > end:
            return n
        time.sleep(0.002)


@needs_openmp
def test_a_late_helper_makes_the_next_calls_serial_until_the_scout_sees_a_core(
        team, conv_inputs):
    x, w = conv_inputs
    want = fastconv.conv2d(x, w)
    _kernels.team_reset(backoff_s=0.5, strikes=1)
    _kernels.team_simulate_late(0.05, 1)        # the next parallel region waited 50 ms
    got = fastconv.conv2d(x, w)
    assert_bitwise_equal(got, want, "conv2d during a back-off")
    s = stats()
    assert s["late_regions"] >= 1 and s["backoffs"] >= 1
    assert s["cap"] == 1 and 0 < s["cap_left_s"] <= 0.5
    assert threads_used(x, w) == 1, "a call during the back-off used the full team"
    assert_bitwise_equal(fastconv.conv2d(x, w), want, "conv2d on the capped team")

    time.sleep(stats()["cap_left_s"] + 0.02)
    # from here every measurement says "on time", whatever the machine's load
    _kernels.team_simulate_late(0.0, 1000)
    assert threads_used(x, w) == 1, "the full team was tried before the scout answered"
    assert scout_decides(x, w) == 2, "the scout saw a free core, but the team stayed capped"
    assert stats()["cap"] == 0 and stats()["scout_late"] == 0

    # the full team is late again soon after: the back-off doubles
    _kernels.team_simulate_late(0.05, 1)
    assert threads_used(x, w) == 2
    s = stats()
    assert s["cap"] == 1 and s["backoff_s"] == pytest.approx(1.0)


# (x shape, weight shape, padding, the routes of forward / grad_input / grad_weight)
# on AVX-512 in auto mode: every conv route a pass can take, so each is held to the cap
CAPPED_LAYERS = [
    ((64, 6, 14, 14), (16, 6, 5, 5), 0, ("winograd_rows",) * 3),   # LeNet conv2
    ((64, 32, 14, 14), (64, 32, 5, 5), 2, ("winograd",) * 3),      # 2-D F(2x2, 5x5)
    ((32, 8, 14, 14), (16, 8, 3, 3), 1, ("direct",) * 3),
    ((64, 1, 28, 28), (6, 1, 5, 5), 2, ("direct",) * 3),           # LeNet conv1
]


@needs_openmp
@pytest.mark.parametrize("layer", CAPPED_LAYERS, ids=lambda v: "x".join(map(str, v[1])))
def test_every_conv_route_keeps_to_the_cap_during_a_back_off(team, rng, layer):
    # the row-Winograd grad_weight once sized its team from the caller's thread
    # count, not the controller's: under a CPU hog LeNet-5 training fell to a
    # third of its 1-thread speed while the cap stood at 1
    from fastconv import _routes, functional as F

    xs, ws, pad, routes = layer
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    gy = rng.standard_normal(F.conv2d(x, w, padding=pad).shape).astype(np.float32)
    previous = F.set_winograd(None)
    try:
        _kernels.team_reset(backoff_s=30.0, strikes=1)
        _kernels.team_simulate_late(0.05, 1)
        F.conv2d(x, w, padding=pad)  # late: the controller backs off
        assert stats()["cap"] == 1
        before = stats()["parallel_regions"]
        F.conv2d(x, w, padding=pad)
        F.conv2d_backward(gy, x, w, padding=pad)
        assert stats()["parallel_regions"] == before, "a pass ran a team past the cap"
        got = _routes.last_algorithms()
    finally:
        F.set_winograd(previous)
    if F.simd_level() == "avx512":
        assert (got["forward"], got["grad_input"], got["grad_weight"]) == routes


@needs_openmp
def test_a_busy_scout_renews_and_doubles_the_backoff_up_to_one_second(team, conv_inputs):
    """No kernel waits to find out that the cores are still busy."""
    x, w = conv_inputs
    _kernels.team_reset(backoff_s=0.3, strikes=1)
    _kernels.team_simulate_late(0.05, 1)
    fastconv.conv2d(x, w)
    assert stats()["backoff_s"] == pytest.approx(0.3)  # a first lateness: no doubling
    for k, want in enumerate((0.6, 1.0), start=1):
        time.sleep(stats()["cap_left_s"] + 0.02)
        _kernels.team_simulate_late(0.05, 1)    # the scout waits 50 ms for a core
        assert scout_decides(x, w) == 1
        s = stats()
        assert s["scout_late"] == k and s["cap"] == 1
        assert s["backoff_s"] == pytest.approx(want)


@needs_openmp
def test_lateness_after_a_clean_spell_starts_the_backoff_afresh(team, conv_inputs):
    x, w = conv_inputs
    _kernels.team_reset(backoff_s=0.1, strikes=1)
    _kernels.team_simulate_late(0.05, 1)
    fastconv.conv2d(x, w)
    assert stats()["backoff_s"] == pytest.approx(0.1)
    time.sleep(0.1 + 1.05)                      # the back-off, then a clean second
    _kernels.team_simulate_late(0.0, 1000)
    assert scout_decides(x, w) == 2
    _kernels.team_simulate_late(0.05, 1)
    assert threads_used(x, w) == 2
    s = stats()
    assert s["cap"] == 1 and s["backoffs"] == 2
    assert s["backoff_s"] == pytest.approx(0.1)


@needs_openmp
def test_a_short_wait_is_not_late(team, conv_inputs):
    """A helper's ordinary wake-up (tens of microseconds) must not cost the team."""
    _kernels.team_adaptive(False)  # keep the full team for both calls
    # every region of the call reports the simulated wait, not what it really waited
    _kernels.team_simulate_late(50e-6, 1000)
    threads_used(*conv_inputs)
    s = stats()
    assert s["parallel_regions"] >= 1 and s["late_regions"] == 0
    _kernels.team_simulate_late(0.05, 1000)
    threads_used(*conv_inputs)
    s2 = stats()
    assert s2["late_regions"] == s2["parallel_regions"] - s["parallel_regions"] >= 1


@needs_openmp
def test_not_adaptive_never_caps(team, conv_inputs):
    _kernels.team_adaptive(False)
    _kernels.team_simulate_late(0.05, 3)
    for _ in range(3):
        assert threads_used(*conv_inputs) == 2
    s = stats()
    assert s["late_regions"] >= 1 and s["backoffs"] == 0 and s["cap"] == 0


def test_one_thread_runs_no_team(team, conv_inputs):
    fastconv.set_num_threads(1)
    assert threads_used(*conv_inputs) == 1
    assert stats()["parallel_regions"] == 0


# --------------------------------------------------------------------------
# The build: OpenMP compiled in, and a team really formed
# --------------------------------------------------------------------------

def test_openmp_build_runs_a_two_thread_team(restore_threads, conv_inputs):
    """setup.py builds a serial extension (with a warning) when the compiler has
    no OpenMP; every other thread test then skips, so this one says so: it fails
    on CI, where the build must be parallel, and elsewhere skips with the reason.
    With OpenMP, a call above the cut-off asked for 2 threads runs on 2."""
    if not fastconv.openmp_enabled():
        if os.environ.get("CI"):
            pytest.fail("CI built fastconv without OpenMP: the kernels run on one thread")
        pytest.skip("this build has no OpenMP (setup.py found no OpenMP support in the "
                    "compiler): a serial build cannot show a team")
    assert fastconv.info()["openmp"] is True
    if fastconv.info()["forked_child_serial"]:
        pytest.skip("a forked child of a process that ran OpenMP runs kernels serially")
    if fastconv.functional._max_num_threads() < 2:
        pytest.skip("the thread limit of this machine is 1")
    fastconv.set_num_threads(2)
    _kernels.team_adaptive(False)  # a busy machine must not cap the team to 1 here
    try:
        n = threads_used(*conv_inputs)
        assert n == 2, f"a conv2d above the cut-off asked for 2 threads ran on {n}"
    finally:
        _kernels.team_adaptive(True)
        _kernels.team_reset()


# --------------------------------------------------------------------------
# The thread-count limit (it used to crash: libgomp allocas a start record per
# thread on the caller's stack, and aborts when it cannot create a thread)
# --------------------------------------------------------------------------

def test_limit_is_four_per_cpu_and_within_the_runtime():
    limit = fastconv.functional._max_num_threads()
    assert 1 <= limit <= 4 * os.cpu_count()
    assert limit <= _kernels.thread_limit() <= 256


@pytest.mark.parametrize("n", [100000, 2**31 - 1, 2**63])
def test_set_num_threads_refuses_more_than_the_limit(n, restore_threads):
    before = fastconv.get_num_threads()
    with pytest.raises(ValueError, match=r"set_num_threads: n must be between 1 and \d+.*got"):
        fastconv.set_num_threads(n)
    assert fastconv.get_num_threads() == before


def test_set_num_threads_accepts_the_limit(restore_threads):
    limit = fastconv.functional._max_num_threads()
    fastconv.set_num_threads(limit)
    assert fastconv.get_num_threads() == limit
    with pytest.raises(ValueError, match=str(limit + 1)):
        fastconv.set_num_threads(limit + 1)


CRASHER = """
import numpy as np, fastconv
from fastconv import _kernels
x = np.ones((16, 6, 14, 14), np.float32)
w = np.ones((16, 6, 5, 5), np.float32)
y = np.empty((16, 16, 10, 10), np.float32)
geom = (16, 6, 14, 14, 16, 5, 5, 10, 10, 1, 1, 0, 0, 0, 0, 1, 1, 1)
_kernels.conv2d_forward(x, w, None, geom, False, {n}, y)
assert fastconv.info()["team"]["threads_last_call"] <= _kernels.thread_limit()
assert (y == 150).all()
print("ok")
"""


@needs_openmp
def test_kernels_clamp_a_huge_team_request():
    """Below Python's check, the C side clamps too: a direct call must not crash."""
    proc = subprocess.run([sys.executable, "-c", CRASHER.format(n=100000)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.strip() == "ok"


def test_omp_num_threads_beyond_the_limit_is_clamped():
    code = ("import fastconv; from fastconv.functional import _max_num_threads; "
            "assert fastconv.get_num_threads() == _max_num_threads(), "
            "fastconv.get_num_threads(); print('ok')")
    env = dict(os.environ, OMP_NUM_THREADS="100000")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_cli_refuses_too_many_threads():
    proc = subprocess.run([sys.executable, "-m", "fastconv", "train", "--threads", "100000"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "--threads: must be at most" in proc.stderr


@needs_openmp
def test_one_late_region_alone_is_not_contention(team, conv_inputs):
    """An isolated hiccup (a halted vCPU waking, a page-faulting share) keeps the
    full team; lateness that recurs within 100 ms starts the back-off."""
    x, w = conv_inputs
    _kernels.team_reset(backoff_s=0.5)           # the default: two strikes
    _kernels.team_simulate_late(0.05, 1, 0.0)  # then every region on time
    assert threads_used(x, w) == 2
    s = stats()
    assert s["late_regions"] == 1 and s["backoffs"] == 0 and s["cap"] == 0
    assert threads_used(x, w) == 2, "one late region capped the team"
    _kernels.team_simulate_late(0.05, 1, 0.0)  # then every region on time
    threads_used(x, w)
    s = stats()
    assert s["late_regions"] == 2 and s["backoffs"] == 1 and s["cap"] == 1
    assert threads_used(x, w) == 1


@needs_openmp
def test_one_late_scout_answer_is_asked_again(team, conv_inputs):
    x, w = conv_inputs
    _kernels.team_reset(backoff_s=0.1, strikes=1)
    _kernels.team_simulate_late(0.05, 1, 0.0)  # then every region on time
    threads_used(x, w)                           # one strike is enough here: capped
    assert stats()["cap"] == 1
    _kernels.team_reset(backoff_s=0.1)           # two strikes from now on (keeps no cap)
    _kernels.team_simulate_late(0.05, 2, 0.0)
    threads_used(x, w)
    threads_used(x, w)                           # two late regions: capped
    assert stats()["cap"] == 1
    time.sleep(stats()["cap_left_s"] + 0.02)
    _kernels.team_simulate_late(0.05, 1, 0.0)    # the scout's first answer is late, the next not
    assert scout_decides(x, w) == 2, "a single late scout answer kept the team capped"
    assert stats()["scout_late"] == 0, "a single late scout answer renewed the back-off"


# --------------------------------------------------------------------------
# threadpoolctl, and thread limits seen from other Python threads
# --------------------------------------------------------------------------

def test_threadpoolctl_sees_fastconv_openmp(restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not fastconv.openmp_enabled():
        pytest.skip("serial build")
    with open("/proc/self/maps") as f:
        maps = f.read()
    omp = [e for e in threadpoolctl.threadpool_info() if e["user_api"] == "openmp"]
    assert omp, threadpoolctl.threadpool_info()
    # the OpenMP runtime threadpoolctl reports is the one mapped next to _kernels
    assert any(os.path.realpath(e["filepath"]) in maps or e["filepath"] in maps for e in omp)
    assert any(e["internal_api"] in ("openmp", "libgomp") or "gomp" in e["filepath"]
               for e in omp)

    fastconv.set_num_threads(2)
    assert fastconv.get_num_threads() == 2
    with threadpoolctl.threadpool_limits(limits=1):
        assert fastconv.get_num_threads() == 1
        y1 = run_workload(2, np.float32)
    assert fastconv.get_num_threads() == 2
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert fastconv.get_num_threads() == 1
    assert fastconv.get_num_threads() == 2
    assert run_workload(2, np.float32) == y1  # thread count never changes results


def test_thread_limits_are_per_thread_but_set_num_threads_is_global(restore_threads):
    """How to avoid oversubscription under a thread pool (see docs/reliability.md).

    OpenMP's thread count is a per-thread setting: ``threadpool_limits`` (or
    OMP's own omp_set_num_threads) in the main thread does not reach threads it
    did not start, so each worker of a pool would still open a full OpenMP
    team. ``fastconv.set_num_threads(1)`` is a process-wide cap and does.
    """
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not fastconv.openmp_enabled():
        pytest.skip("serial build")
    fastconv.set_num_threads(2)
    seen = {}

    def probe(key):
        seen[key] = fastconv.get_num_threads()

    t = threading.Thread(target=probe, args=("fresh-thread",))
    t.start()
    t.join()
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        t = threading.Thread(target=probe, args=("limits-in-main",))
        t.start()
        t.join()
    fastconv.set_num_threads(1)
    t = threading.Thread(target=probe, args=("set_num_threads",))
    t.start()
    t.join()

    def limited():
        with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
            probe("limits-in-worker")

    fastconv.set_num_threads(2)
    t = threading.Thread(target=limited)
    t.start()
    t.join()
    assert seen["set_num_threads"] == 1
    assert seen["limits-in-worker"] == 1
    # documented behaviour of the OpenMP runtime (libgomp): limits are per thread,
    # so a thread started inside the main thread's limit does not see it
    if seen["fresh-thread"] > 1:
        assert seen["limits-in-main"] == seen["fresh-thread"]


@needs_openmp
def test_late_regions_in_which_no_thread_waited_for_a_cpu_keep_the_team(team, conv_inputs):
    """Regression (issue #10, idle VM): a share that stalls on its own (page faults
    on a fresh output) makes a region late with no thread of ours waiting for a
    CPU. Such regions are counted as stalls and never cap the team; the same
    lateness with run delay behind it does."""
    x, w = conv_inputs
    _kernels.team_reset(backoff_s=0.5)            # the default: two strikes
    _kernels.team_simulate_sched(False)           # the run delay did not grow
    _kernels.team_simulate_late(0.05, 4, 0.0)     # four late regions, then on time
    for _ in range(4):
        assert threads_used(x, w) == 2
    s = stats()
    assert s["late_regions"] == 4 and s["stalled_regions"] == 4
    assert s["backoffs"] == 0 and s["cap"] == 0, "stalls of our own capped the team"
    _kernels.team_simulate_sched(True)            # now threads waited for a CPU
    _kernels.team_simulate_late(0.05, 2, 0.0)
    threads_used(x, w)
    threads_used(x, w)
    s = stats()
    assert s["late_regions"] == 6 and s["stalled_regions"] == 4
    assert s["backoffs"] == 1 and s["cap"] == 1
    assert threads_used(x, w) == 1


@needs_openmp
def test_a_cpu_hog_per_core_shows_as_run_delay_and_caps_the_team(team, rng):
    """The real reading, end to end: with one CPU-bound process per core, a
    two-thread kernel's threads wait for CPUs, the process's run delay grows,
    and its late regions cap the team (none is taken for a stall)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("per-thread run delay is read from Linux's /proc")
    assert _kernels.team_run_delay() != -1.0, "no /proc/self/task/*/schedstat run delay"
    x = rng.standard_normal((64, 6, 28, 28)).astype(np.float32)
    w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.2)
        end = time.monotonic() + 10.0
        while stats()["backoffs"] == 0 and time.monotonic() < end:
            fastconv.conv2d(x, w)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    s = stats()
    # a reading that never saw run delay would take every late region after the
    # first for a stall, and never back off
    assert s["backoffs"] >= 1, s
    assert s["stalled_regions"] < s["late_regions"], s


@needs_openmp
def test_lateness_after_a_lift_on_a_full_run_queue_renews_it_at_once(team, conv_inputs):
    """Under a lasting load each probe of the full team costs its late regions:
    when the team was tried only because the run queue's renewals ran out (every
    core still busy), one late region is proof enough (a first back-off needs two)."""
    x, w = conv_inputs
    _kernels.team_reset(backoff_s=0.02)           # the default: two strikes
    _kernels.team_simulate_late(0.05, 2, 0.0)     # two late regions, then all on time
    threads_used(x, w)
    threads_used(x, w)
    assert stats()["backoffs"] == 1
    _kernels.team_simulate_full(True)
    for k in range(4):                            # renewed on the run queue alone
        time.sleep(stats()["cap_left_s"] + 0.01)
        assert scout_decides(x, w) == 1, k
    time.sleep(stats()["cap_left_s"] + 0.01)
    assert scout_decides(x, w) == 2               # the renewals ran out: a probe
    assert stats()["backoffs"] == 5
    before = stats()["backoff_s"]
    _kernels.team_simulate_late(0.05, 1, 0.0)     # one late region of the probe
    threads_used(x, w)
    s = stats()
    assert s["backoffs"] == 6 and s["cap"] == 1, "one late probe region left the team whole"
    assert s["backoff_s"] == pytest.approx(min(2 * before, 1.0))


@needs_openmp
def test_one_late_region_after_a_lift_on_a_free_core_is_a_hiccup(team, conv_inputs):
    """Regression (issue #10, idle VM): after the scout saw a free core, one late
    region renewed the back-off at once and doubled it; stray hiccups a second
    apart grew a chain of back-offs at one thread's speed on an idle machine.
    After a lift on a free core it takes two strikes, as a first back-off does,
    and the back-off still doubles when they come."""
    x, w = conv_inputs
    _kernels.team_reset(backoff_s=0.05)           # the default: two strikes
    _kernels.team_simulate_late(0.05, 2, 0.0)     # two late regions, then all on time
    threads_used(x, w)
    threads_used(x, w)
    assert stats()["backoffs"] == 1
    time.sleep(stats()["cap_left_s"] + 0.01)
    _kernels.team_simulate_full(False)
    assert scout_decides(x, w) == 2
    _kernels.team_simulate_late(0.05, 1, 0.0)     # one late region: a hiccup
    assert threads_used(x, w) == 2
    s = stats()
    assert s["late_regions"] == 3 and s["backoffs"] == 1 and s["cap"] == 0
    assert threads_used(x, w) == 2, "one late region after a free-core lift capped the team"
    time.sleep(0.15)                              # out of that strike's window
    _kernels.team_simulate_late(0.05, 2, 0.0)     # lateness that recurs: contention
    threads_used(x, w)
    threads_used(x, w)
    s = stats()
    assert s["backoffs"] == 2 and s["cap"] == 1
    assert s["backoff_s"] == pytest.approx(0.1)   # within the clean spell: doubled


@needs_openmp
def test_a_full_run_queue_renews_the_backoff_a_few_times_then_the_team_is_tried(
        team, conv_inputs):
    """The scout runs at once when it wakes even if both cores are taken (the
    scheduler favours a thread that slept), so it also reads the run queue;
    that reading alone renews the back-off at most 4 times in a row."""
    x, w = conv_inputs
    _kernels.team_reset(backoff_s=0.02, strikes=1)
    _kernels.team_simulate_late(0.05, 1, 0.0)     # one late region; later waits short
    fastconv.conv2d(x, w)
    assert stats()["backoffs"] == 1
    _kernels.team_simulate_full(True)
    for k in range(1, 5):
        time.sleep(stats()["cap_left_s"] + 0.01)
        assert scout_decides(x, w) == 1, f"renewal {k}: the team was tried on a full machine"
        assert stats()["scout_late"] == k
    time.sleep(stats()["cap_left_s"] + 0.01)
    assert scout_decides(x, w) == 2, "a full run queue kept the team capped for good"


@needs_openmp
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/loadavg")
@pytest.mark.skipif((os.cpu_count() or 1) > 8, reason="one busy process per core")
def test_the_run_queue_reading_sees_every_core_busy():
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 1)]
    try:
        end = time.monotonic() + 5.0
        seen = False
        while not seen and time.monotonic() < end:
            seen = _kernels.team_cores_full()
            time.sleep(0.01)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert seen, "one CPU-bound process per core, and the run queue showed a free core"


@needs_openmp
def test_batch_one_lenet5_forward_wakes_no_team(team):
    """Regression (issue #10): conv2 at batch 1 is big enough for a team (240,000
    multiply-adds) but its padded copy of 1,176 floats is not; that copy was the
    one parallel region of the whole forward, and its helper, spinning after it,
    took the core the caller needed under load. A region too small for a team
    runs on the caller alone, whatever its call was given."""
    _kernels.team_adaptive(False)
    model = fastconv.models.lenet5(seed=0)
    model.eval()
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    fastconv.set_num_threads(1)
    want = model.forward(x)
    fastconv.set_num_threads(2)
    for _ in range(5):
        got = model.forward(x)
    assert stats()["parallel_regions"] == 0, "batch-1 LeNet-5 forward woke a team"
    assert_bitwise_equal(got, want, "LeNet-5 forward at 1 and 2 threads")
    model.forward(np.repeat(x, 64, axis=0))     # batch 64 still gets its team
    assert stats()["parallel_regions"] >= 1


@needs_openmp
def test_batch_one_mnist_cnn_forward_wakes_the_team_twice(team):
    """Regression (issue #10): at batch 1 the MNIST CNN's conv2 (Winograd) opened
    a region for its padded copy (10k floats, ~2 us) before the one for its
    products: a wake-up that cost more than it saved, and one more chance per
    call to wait for a helper off its core. Two regions are worth a team: conv2's
    products and the 3136 -> 1024 dense layer."""
    _kernels.team_adaptive(False)
    model = fastconv.models.mnist_cnn(seed=0)
    model.eval()
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    fastconv.set_num_threads(1)
    want = model.forward(x)
    fastconv.set_num_threads(2)
    model.forward(x)
    _kernels.team_reset()
    for _ in range(5):
        got = model.forward(x)
    assert stats()["parallel_regions"] == 2 * 5
    assert_bitwise_equal(got, want, "MNIST CNN forward at 1 and 2 threads")


# --------------------------------------------------------------------------
# A caller held off its core (issue #10): real descheduling, one core
# --------------------------------------------------------------------------

@pytest.mark.parametrize("total, work, late, off, want", [
    # LeNet-5 forward at batch 1, one CPU hog: a 0.5 us share, the caller 20 ms off its core
    (20e-3, 20e-3, 0.2e-6, 19.99e-3, True),
    # the same region with the caller on its core all along: its own long share
    (20e-3, 20e-3, 0.2e-6, 0.0, False),
    # a long share that lost 0.4 ms to the scheduler is still worth the team
    (5e-3, 4.9e-3, 10e-6, 0.4e-3, False),
    # a helper a time slice late for a 1 ms share; one woken in 50 us
    (11e-3, 1e-3, 10e-3, 0.0, True),
    (1.05e-3, 1e-3, 50e-6, 0.0, False),
    # the caller waited for a helper descheduled mid-share, spinning on its core
    (6e-3, 1e-3, 5e-6, 0.0, True),
])
def test_what_makes_a_region_late(total, work, late, off, want):
    """Regression (issue #10): time the caller spends off its core inside its own
    share is waiting, not work; the controller saw only waits for helpers."""
    assert _kernels.team_region_late(total, work, late, off) is want


ONE_CORE = """
import os, json, numpy as np, fastconv, fastconv.models
from fastconv import _kernels
# before any parallel region, so the OpenMP helpers start on the same core
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
model = fastconv.models.lenet5(seed=0)
model.eval()
x = np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)
fastconv.set_num_threads(2)
out = {}
for adaptive, calls in ((False, 10), (True, 300)):
    _kernels.team_adaptive(adaptive)
    for _ in range(3):
        model.forward(x)
    _kernels.team_reset()
    for _ in range(calls):
        model.forward(x)
    out[str(adaptive)] = _kernels.team_stats()
print(json.dumps(out))
"""


@needs_openmp
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_a_caller_descheduled_by_its_own_helper_is_late():
    """Regression (issue #10): LeNet-5 ``forward`` at batch 1 with 2 threads ran
    2.4x slower than with 1 thread beside one CPU-bound process: a helper
    spinning on the core the caller needed held the caller off it for a time
    slice (20 ms) inside a region, and the controller, which timed only waits
    for helpers, counted that as the caller's own work. With both threads on
    one core every region of a batch-16 forward waits a time slice, some with
    the caller off its core: each must be judged late, and the adaptive team
    must then keep the calls on one thread."""
    proc = subprocess.run([sys.executable, "-c", ONE_CORE], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    s = json.loads(proc.stdout.strip().splitlines()[-1])
    fixed, adaptive = s["False"], s["True"]
    assert fixed["parallel_regions"] >= 10
    assert fixed["late_regions"] >= 0.9 * fixed["parallel_regions"], fixed
    assert fixed["descheduled_regions"] >= 1, fixed
    assert adaptive["backoffs"] >= 1 and adaptive["parallel_regions"] <= 30, adaptive
