#!/usr/bin/env bash
# Memory-safety run of the kernel test suite, in a throw-away copy of the repo.
#
#   scripts/sanitize.sh            # ASan + UBSan build, kernel tests
#   scripts/sanitize.sh debug      # FASTCONV_DEBUG=1 (Cython bounds checks), kernel tests
#   KEEP=1 scripts/sanitize.sh     # keep the temp copy for a look afterwards
#
# The copy is of the working tree (tracked + untracked, not ignored files), so
# uncommitted edits are tested too; the in-place build in the source tree is
# never touched. Extra arguments after the mode go to pytest.
#
# Under ASan, CPython itself is not instrumented, so libasan must be preloaded;
# detect_leaks=0 because the interpreter keeps many allocations alive at exit
# (those are CPython's, not ours). Any ASan or UBSan report aborts the process
# (halt_on_error / -fno-sanitize-recover), so a green run means zero reports.
set -euo pipefail

MODE=${1:-asan}
shift || true
SRC=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
TESTS=${TESTS:-"tests/test_conv.py tests/test_pool.py tests/test_paths.py tests/test_validation.py tests/test_determinism.py tests/test_properties.py"}

WORK=$(mktemp -d /tmp/fc-${MODE}.XXXXXX)
if [[ -z "${KEEP:-}" ]]; then trap 'rm -rf "$WORK"' EXIT; fi
echo "== copying $SRC -> $WORK"
(cd "$SRC" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | (cd "$WORK" && tar -xf -)

cd "$WORK"
case "$MODE" in
  asan)
    echo "== building with FASTCONV_SANITIZE=1 (-fsanitize=address,undefined)"
    FASTCONV_SANITIZE=1 "$PY" setup.py build_ext --inplace >build.log 2>&1 || { tail -50 build.log; exit 1; }
    LIBASAN=$(gcc -print-file-name=libasan.so)
    LIBUBSAN=$(gcc -print-file-name=libubsan.so)
    export LD_PRELOAD="$LIBASAN:$LIBUBSAN"
    export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_string_checks=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    ;;
  debug)
    echo "== building with FASTCONV_DEBUG=1 (Cython boundscheck/wraparound/initializedcheck)"
    FASTCONV_DEBUG=1 "$PY" setup.py build_ext --inplace >build.log 2>&1 || { tail -50 build.log; exit 1; }
    ;;
  *) echo "usage: $0 [asan|debug] [pytest args...]" >&2; exit 2 ;;
esac

echo "== extension: $(ls fastconv/_kernels*.so)"
# Run from the copy so 'import fastconv' picks the instrumented build.
set +e
"$PY" -m pytest $TESTS -q -p no:randomly "$@" 2>&1 | tee pytest.log
rc=${PIPESTATUS[0]}
set -e
reports=$(grep -cE "ERROR: AddressSanitizer|runtime error:" pytest.log || true)
echo "== mode=$MODE pytest exit=$rc sanitizer reports=$reports"
exit $rc
