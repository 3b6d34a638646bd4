#!/usr/bin/env bash
# valgrind memcheck over every kernel (scripts/valgrind_smoke.py), both dtypes,
# 1 and 2 threads, on each SIMD path valgrind can run.
#
#   scripts/valgrind_smoke.sh             # generic + avx2 paths (valgrind 3.19 has no AVX-512)
#   SIMD="generic" scripts/valgrind_smoke.sh --quick
#
# CPython noise: PYTHONMALLOC=malloc makes every Python allocation visible to
# memcheck (no pymalloc arenas that look uninitialised), and only error records
# whose stack mentions fastconv code (_kernels / fc_ / csrc) are counted; the
# others (CPython, NumPy, libgomp) are printed as a total only. The run uses
# --error-exitcode so valgrind's own verdict is recorded too.
# Exit status: 0 iff no fastconv error and the workload itself succeeded.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# the real interpreter, not a pyenv/venv shim script (valgrind would trace the shim)
PY=$("${PYTHON:-python}" -c "import sys; print(sys.executable)")
OUT=${OUT:-/tmp/fc-valgrind}
mkdir -p "$OUT"
status=0
for simd in ${SIMD:-generic avx2}; do
  log="$OUT/memcheck-$simd.log"
  start=$(date +%s)
  (cd "$ROOT" && PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONMALLOC=malloc FASTCONV_SIMD=$simd OMP_WAIT_POLICY=passive \
    valgrind --tool=memcheck --error-exitcode=42 --track-origins=yes \
      --num-callers=30 --log-file="$log" \
      "$PY" scripts/valgrind_smoke.py "$@")
  rc=$?
  end=$(date +%s)
  # one error record = from "==pid== <kind>" to the blank "==pid== " line
  ours=$(awk '/^==[0-9]+== [A-Z]/ {rec=$0; keep=0; inrec=1; next}
              inrec && /(_kernels|fc_[a-z0-9_]+|csrc\/)/ {keep=1}
              inrec && /^==[0-9]+== $/ {if (keep) n++; inrec=0}
              END {print n+0}' "$log")
  total=$(grep -Eo "ERROR SUMMARY: [0-9]+" "$log" | tail -1 | grep -Eo "[0-9]+")
  echo "== simd=$simd valgrind exit=$rc errors(all)=${total:-?} errors(fastconv)=$ours" \
       "time=$((end - start)) s log=$log"
  if [[ "$ours" != 0 ]]; then
    echo "-- fastconv error records:"
    awk '/^==[0-9]+== [A-Z]/ {buf=$0 "\n"; keep=0; inrec=1; next}
         inrec {buf=buf $0 "\n"} inrec && /(_kernels|fc_[a-z0-9_]+|csrc\/)/ {keep=1}
         inrec && /^==[0-9]+== $/ {if (keep) printf "%s", buf; inrec=0}' "$log" | head -80
    status=1
  fi
  # the workload failing (mismatch, crash) is a failure too; 42 = valgrind saw errors
  if [[ $rc != 0 && $rc != 42 ]]; then status=1; fi
done
exit $status
