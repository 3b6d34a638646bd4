#!/usr/bin/env bash
# Long hypothesis soak of tests/test_properties.py (fastconv against the reference).
#
#   scripts/fuzz_long.sh                    # the 'long' profile: 100,000 examples per property
#   EXAMPLES=2500 scripts/fuzz_long.sh      # a time-boxed run: 2,500 examples per property
#   SEED=123 EXAMPLES=... scripts/fuzz_long.sh   # reproducible example stream
#
# The full profile is registered in tests/conftest.py (FASTCONV_HYPOTHESIS_PROFILE=long).
# A smaller EXAMPLES registers a same-settings profile 'long<N>' from a throw-away
# pytest plugin (loaded with -p before conftest, so conftest's load_profile finds it).
# --hypothesis-show-statistics prints, per property, the examples run and the time.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
EXAMPLES=${EXAMPLES:-100000}
args=(-q --hypothesis-show-statistics -p no:cacheprovider)
[[ -n "${SEED:-}" ]] && args+=(--hypothesis-seed="$SEED")

if [[ "$EXAMPLES" == 100000 ]]; then
  export FASTCONV_HYPOTHESIS_PROFILE=long
  plugin_args=()
else
  PLUG=$(mktemp -d /tmp/fc-fuzz.XXXXXX)
  trap 'rm -rf "$PLUG"' EXIT
  cat >"$PLUG/fc_fuzz_profile.py" <<PYEOF
from hypothesis import HealthCheck, settings
settings.register_profile("long$EXAMPLES", max_examples=$EXAMPLES, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
PYEOF
  export PYTHONPATH="$PLUG${PYTHONPATH:+:$PYTHONPATH}"
  export FASTCONV_HYPOTHESIS_PROFILE=long$EXAMPLES
  plugin_args=(-p fc_fuzz_profile)
fi

cd "$ROOT"
start=$(date +%s)
set +e
"$PY" -m pytest "${plugin_args[@]}" tests/test_properties.py "${args[@]}" "$@"
rc=$?
set -e
end=$(date +%s)
echo "== fuzz_long: profile=$FASTCONV_HYPOTHESIS_PROFILE examples/property=$EXAMPLES" \
     "wall=$((end - start)) s exit=$rc"
exit $rc
