#!/usr/bin/env bash
# The whole test suite: unit, contract, then end to end against the real lab (needs root).
# The lab is torn down on any exit, also after a failure. pytest's "no tests collected" (exit 5) fails.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

teardown() {
  "$BIN/orchestrator" lab down >/dev/null 2>&1 || true
}
trap teardown EXIT INT TERM

"$BIN/ruff" check --quiet orchestrator tests bench || exit 1

"$BIN/pytest" -q -p no:cacheprovider tests "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
exit "$rc"
