#!/usr/bin/env bash
# End-to-end check of what a user gets from `pip install fastconv`:
#
#   1. copy the source tree (tracked + untracked, minus ignored build products)
#      to a scratch dir, so nothing is built in or written to the checkout;
#   2. `python -m build`: an sdist, then a wheel built *from that sdist* in an
#      isolated environment (so a file missing from the sdist breaks the build);
#   3. check the sdist has the sources (.pyx, .pxd, csrc/*.c, csrc/*.h, stubs,
#      README, pyproject.toml, setup.py) and no build products (Cython's
#      fastconv/_kernels.c, .so), and that the wheel has the compiled module,
#      the stubs, py.typed and every subpackage;
#   4. a fresh `python -m venv` with only numpy and the wheel (no Cython, no
#      compiler needed), run from an empty directory: fastconv imports from
#      site-packages, reports OpenMP on, its metadata version equals
#      fastconv.__version__, conv2d / pooling agree with plain NumPy loops,
#      LeNet-5 runs a training step, and `python -m fastconv info` works.
#
# Usage: scripts/check_wheel.sh [SOURCE_DIR]     (default: this checkout)
# Env:   PYTHON=python3.11  interpreter to build and test with (default: python3)
#        KEEP=1             keep the scratch dir (printed at the end)
#        WHEEL_OUT=DIR      also copy the sdist and wheel to DIR
# Needs: `build` (pip install build, or the `dev` extra) and network access to
#        PyPI for the isolated build environment and numpy. Takes 2-4 minutes.
set -euo pipefail

PYTHON=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
SRC=$(cd "${1:-$HERE}" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastconv-wheelcheck.XXXXXX")
cleanup() { if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

step() { echo; echo "== $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

"$PYTHON" -m build --version >/dev/null 2>&1 ||
    fail "'$PYTHON -m build' not available: pip install build (or pip install '.[dev]')"

step "copy $SRC -> $WORK/src (without build products)"
mkdir -p "$WORK/src"
if git -C "$SRC" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # tracked and untracked-but-not-ignored files: what a fresh clone plus
    # uncommitted work would contain, never build/, *.so or _kernels.c
    (cd "$SRC" && git ls-files -co --exclude-standard -z |
        while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done |
        tar --null -T - -cf -) | tar -xf - -C "$WORK/src"
else
    cp -a "$SRC/." "$WORK/src/"
    rm -rf "$WORK/src/build" "$WORK/src/dist" "$WORK/src/.git"
    find "$WORK/src" \( -name '*.so' -o -name '*.pyd' -o -name '*.o' \
        -o -name '__pycache__' -o -path '*/fastconv/_kernels.c' \) -prune -exec rm -rf {} +
fi

step "build sdist, then a wheel from the sdist (isolated)"
"$PYTHON" -m build --outdir "$WORK/dist" "$WORK/src" >"$WORK/build.log" 2>&1 ||
    { tail -40 "$WORK/build.log"; fail "python -m build failed (log: $WORK/build.log)"; }
grep -iE "warning: fastconv|cannot build OpenMP" "$WORK/build.log" &&
    fail "the wheel was built without OpenMP"
SDIST=$(ls "$WORK"/dist/fastconv-*.tar.gz)
WHEEL=$(ls "$WORK"/dist/fastconv-*.whl)
echo "sdist: $(basename "$SDIST") ($(du -h "$SDIST" | cut -f1))"
echo "wheel: $(basename "$WHEEL") ($(du -h "$WHEEL" | cut -f1))"
[[ -n "${WHEEL_OUT:-}" ]] && mkdir -p "$WHEEL_OUT" && cp "$SDIST" "$WHEEL" "$WHEEL_OUT/"

step "sdist and wheel contents"
"$PYTHON" - "$SDIST" "$WHEEL" <<'PY'
import fnmatch, sys, tarfile, zipfile

sdist, wheel = sys.argv[1:]
with tarfile.open(sdist) as t:
    names = [n.split("/", 1)[1] for n in t.getnames() if "/" in n]
with zipfile.ZipFile(wheel) as z:
    wnames = z.namelist()

def check(label, files, must, never):
    bad = [p for p in must if not fnmatch.filter(files, p)]
    bad += [f"{f} (must not be shipped)" for p in never for f in fnmatch.filter(files, p)]
    if bad:
        sys.exit(f"FAIL: {label}: missing or unwanted:\n  " + "\n  ".join(bad))
    print(f"{label}: {len(files)} files, OK")

check("sdist", names,
      must=["README.md", "pyproject.toml", "setup.py", "MANIFEST.in",
            "fastconv/_kernels.pyx", "fastconv/_plan_program.pxi", "fastconv/_kernels.pxd", "fastconv/_kernels.pyi",
            "fastconv/functional.pyi", "fastconv/py.typed", "fastconv/nn/__init__.py",
            "fastconv/optim/__init__.py", "fastconv/onnx/__init__.py",
            "csrc/fastconv.h", "csrc/fc_conv_fwd.c", "csrc/fc_pool.c", "csrc/fc_ukernels.c"],
      never=["fastconv/_kernels.c", "*.so", "*.pyd", "*.o", "build/*", "*__pycache__*"])
check("wheel", wnames,
      must=["fastconv/_kernels.*.so" if not wheel.endswith("win_amd64.whl") else "fastconv/_kernels.*.pyd",
            "fastconv/_kernels.pyi", "fastconv/functional.pyi", "fastconv/py.typed",
            "fastconv/__init__.py", "fastconv/nn/__init__.py", "fastconv/nn/sequential.py",
            "fastconv/models.py", "fastconv/datasets.py", "fastconv/optim/__init__.py",
            "fastconv/onnx/__init__.py", "fastconv-*.dist-info/entry_points.txt"],
      never=["fastconv/_kernels.c", "csrc/*", "tests/*"])
PY

step "fresh venv: numpy + the wheel only"
"$PYTHON" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
[[ -x "$VPY" ]] || VPY="$WORK/venv/Scripts/python.exe"
"$VPY" -m pip install -q --disable-pip-version-check numpy "$WHEEL"
# (python -m venv on Python <= 3.11 also seeds setuptools; a compiler is never used)
"$VPY" -m pip list --disable-pip-version-check 2>/dev/null | grep -iE "^cython " &&
    fail "the venv is not bare: it has Cython"

step "checks, run from an empty directory"
mkdir -p "$WORK/empty"
cd "$WORK/empty"
"$VPY" - "$WORK/venv" <<'PY'
import importlib.metadata as md
import os
import sys

import numpy as np

import fastconv

venv = os.path.realpath(sys.argv[1])
where = os.path.realpath(fastconv.__file__)
assert where.startswith(venv), f"fastconv imported from {where}, not the venv {venv}"
print("imported from", os.path.dirname(where))

info = fastconv.info()
print("info:", info)
assert fastconv.openmp_enabled(), "the wheel's kernels are serial: built without OpenMP"
assert md.version("fastconv") == fastconv.__version__, (md.version("fastconv"), fastconv.__version__)
try:
    import Cython  # noqa: F401
    sys.exit("Cython is importable in the bare venv")
except ImportError:
    pass


def conv_loop(x, w, b, s, p):
    n, c, h, wd = x.shape
    k, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    ho, wo = (h + 2 * p - kh) // s + 1, (wd + 2 * p - kw) // s + 1
    y = np.empty((n, k, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * s:i * s + kh, j * s:j * s + kw]
            y[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3])) + b
    return y


rng = np.random.default_rng(0)
for dtype, tol in ((np.float32, 1e-4), (np.float64, 1e-11)):
    x = rng.standard_normal((3, 4, 11, 9)).astype(dtype)
    w = rng.standard_normal((5, 4, 3, 3)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    for s, p in ((1, 0), (1, 1), (2, 1)):
        y = fastconv.conv2d(x, w, b, stride=s, padding=p)
        ref = conv_loop(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), s, p)
        assert y.dtype == dtype and y.shape == ref.shape, (y.dtype, y.shape, ref.shape)
        err = np.max(np.abs(y - ref)) / max(1.0, np.max(np.abs(ref)))
        assert err < tol, f"conv2d {np.dtype(dtype)} stride {s} pad {p}: rel err {err:.3g}"
    m = fastconv.max_pool2d(x, 2)
    assert np.array_equal(m, x[:, :, :10, :8].reshape(3, 4, 5, 2, 4, 2).max(axis=(3, 5)))
    a = fastconv.avg_pool2d(x, 2)
    assert np.allclose(a, x[:, :, :10, :8].reshape(3, 4, 5, 2, 4, 2).mean(axis=(3, 5)), atol=tol)
print("conv2d / max_pool2d / avg_pool2d agree with NumPy loops (float32, float64)")

fastconv.set_num_threads(1)
one = fastconv.conv2d(x, w, b, padding=1)
fastconv.set_num_threads(2)
assert np.array_equal(one, fastconv.conv2d(x, w, b, padding=1)), "1 and 2 threads differ"

model = fastconv.models.lenet5(seed=0)
model.compile(optimizer="adam", loss="cross_entropy", metrics=["accuracy"])
xb = rng.random((32, 1, 28, 28), dtype=np.float32)
yb = rng.integers(0, 10, 32)
hist = model.fit(xb, yb, batch_size=16, epochs=1, verbose=0)
print("lenet5 one epoch on random data:", {k: [round(float(v), 4) for v in vs]
                                            for k, vs in hist.history.items()})
PY
"$VPY" -m fastconv info
BIN=$(dirname "$VPY")
"$BIN/fastconv" --help >/dev/null || "$BIN/fastconv.exe" --help >/dev/null ||
    fail "the 'fastconv' console script is missing"

step "OK: $(basename "$WHEEL") builds from its sdist and works in a bare venv"
