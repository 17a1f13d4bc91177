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
"$BIN/mypy" || exit 1

# cheap tiers first; the lab tier builds the nspawn lab once for the whole session
"$BIN/pytest" -q -p no:cacheprovider tests/unit tests/contract tests/adversarial tests/power tests/lab "$@"
rc=$?
if [ "$rc" = 5 ]; then
  echo "pytest collected no tests: that is a failure, not a pass" >&2
  exit 1
fi
[ "$rc" = 0 ] || exit "$rc"
"$BIN/orchestrator" lab down >/dev/null 2>&1 || true

# the VM tier: the same rehearsal on Vagrant VMs (libvirt, software emulation here)
if [ -f scripts/vagrant-tier.sh ]; then
  bash scripts/vagrant-tier.sh || exit 1
fi
exit 0
