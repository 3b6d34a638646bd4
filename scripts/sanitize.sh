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
# (those are CPython's, not ours). ASan is built with -fsanitize-recover=address
# and run with halt_on_error=0 so one bad read does not hide the next: every
# report goes to $OUT/asan.<pid> (pytest's fd capture would swallow stderr), and
# the script counts them at the end. UBSan stays fatal (setup.py builds it with
# -fno-sanitize-recover=undefined). The standalone libubsan preloaded next to
# libasan ignores log_path and writes to stderr, which pytest's fd capture
# threw away with the aborted process (a run once ended "pytest exit=1,
# sanitizer reports=0"), so pytest runs with --capture=sys: C-level stderr
# reaches the tee'd pytest log, and "runtime error:" lines there count too.
# The run is green only if pytest passes AND there are zero reports.
set -euo pipefail

MODE=${1:-asan}
shift || true
SRC=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
TESTS=${TESTS:-"tests/test_conv.py tests/test_pool.py tests/test_paths.py tests/test_validation.py tests/test_determinism.py tests/test_properties.py tests/test_geometry_limits.py"}

WORK=$(mktemp -d /tmp/fc-${MODE}.XXXXXX)
OUT=${OUT:-/tmp/fc-sanitize-logs/$MODE}
mkdir -p "$OUT"; rm -f "$OUT"/asan.* "$OUT"/ubsan.* "$OUT"/pytest-$MODE.log
if [[ -z "${KEEP:-}" ]]; then trap 'rm -rf "$WORK"' EXIT; fi
echo "== copying $SRC -> $WORK"
(cd "$SRC" && git ls-files -co --exclude-standard -z | tar --null --ignore-failed-read -T - -cf -) | (cd "$WORK" && tar -xf -)

cd "$WORK"
case "$MODE" in
  asan)
    echo "== building with FASTCONV_SANITIZE=1 (-fsanitize=address,undefined)"
    CFLAGS="${CFLAGS:-} -fsanitize-recover=address" FASTCONV_SANITIZE=1 "$PY" setup.py build_ext --inplace >build.log 2>&1 || { tail -50 build.log; exit 1; }
    LIBASAN=$(gcc -print-file-name=libasan.so)
    LIBUBSAN=$(gcc -print-file-name=libubsan.so)
    export LD_PRELOAD="$LIBASAN:$LIBUBSAN"
    export ASAN_OPTIONS=detect_leaks=0:halt_on_error=0:detect_stack_use_after_return=1:check_initialization_order=1:log_path=$OUT/asan
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$OUT/ubsan
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
"$PY" -m pytest $TESTS -q --capture=sys "$@" 2>&1 | tee "$OUT/pytest-$MODE.log"
rc=${PIPESTATUS[0]}
set -e
logs() { cat "$OUT"/asan.* "$OUT"/ubsan.* "$OUT/pytest-$MODE.log" 2>/dev/null || true; }
reports=$(logs | grep -cE "ERROR: AddressSanitizer|runtime error:" || true)
if [[ "$reports" != 0 ]]; then
  echo "== sanitizer reports: stack frames in fastconv code, with counts:"
  logs | grep -E "^    #[0-9]+ .* in .*(csrc|fastconv)/" \
    | sed -E 's/^ *#[0-9]+ 0x[0-9a-f]+ //' | sort | uniq -c | sort -rn | head -20 || true
  logs | grep -E "ERROR: AddressSanitizer|runtime error:" \
    | sed -E 's/==[0-9]+==//; s/ on address.*//' | sort | uniq -c || true
fi
echo "== mode=$MODE pytest exit=$rc sanitizer reports=$reports (logs: $OUT)"
[[ "$rc" == 0 && "$reports" == 0 ]]
