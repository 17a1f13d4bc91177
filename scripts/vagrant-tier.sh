#!/usr/bin/env bash
# The VM tier of CI: the rehearsal on Vagrant VMs (libvirt), from inventories/vm-lab.yml.
#
#   scripts/vagrant-tier.sh                # packages, then the tests from a fresh machine's state
#   scripts/vagrant-tier.sh --setup-only   # only the packages (e.g. on a laptop)
#   VAGRANT_TIER_CACHED=1 scripts/vagrant-tier.sh   # keep the box and the pool (the cached path)
#
# Installs the Debian packages it needs, then recreates a fresh machine's state so that CI always
# takes the first-time path, as a new user does: no built box, an empty libvirt pool, no box in
# Vagrant's home, and /dev/kvm as a machine without udev has it (0660 root:root; the original owner
# group and mode are put back at the end). The tests' `lab up` then builds the box, fixes the device,
# starts libvirt, uploads the box into the pool and boots the VMs. It ALWAYS tears down what it
# brought up (trap): the VMs, the lab's libvirt networks, and the daemons it started (by PID),
# including the BMCs the tests put in front of two VMs (sushy-emulator for Redfish, virtualbmc for IPMI,
# on 127.0.0.1:17443 and :17623 as inventories/vm-lab.yml says; the fixtures stop them by PID, and
# this trap does if pytest could not).
# Exits non-zero whenever the tier could not run: it never skips. Prints the time of each phase.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PY=$BIN/python
export DEBIAN_FRONTEND=noninteractive VAGRANT_CHECKPOINT_DISABLE=1
PACKAGES="vagrant vagrant-libvirt libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
          qemu-utils extlinux syslinux-common fdisk e2fsprogs dnsmasq-base iptables debootstrap openssh-client"
STAMP=/var/lib/orchestrator-vm-lab/.system-packages

t0=$(date +%s)
phase_start=$t0
phase() {  # NAME: ends the current phase
  local now
  now=$(date +%s)
  echo "vagrant-tier: $1 took $((now - phase_start)) s (total $((now - t0)) s)"
  phase_start=$now
}
die() { echo "vagrant-tier: FAILED: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (apt-get, libvirt, box build)"
[ -x "$PY" ] || die "$PY is missing: run \`make setup\` first"
command -v ipmitool >/dev/null || die "ipmitool is missing (the IPMI power driver's client): run \`make setup\`"

# 1. packages (once per machine; the stamp changes with this list)
want=$(echo $PACKAGES | sha256sum | cut -c1-16)
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  mkdir -p "$(dirname "$STAMP")"
  apt-get update -qq >/dev/null || die "apt-get update failed"
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 $PACKAGES >/tmp/vagrant-tier-apt.log 2>&1 \
    || { tail -n 20 /tmp/vagrant-tier-apt.log >&2; die "apt-get install failed (log: /tmp/vagrant-tier-apt.log)"; }
  echo "$want" > "$STAMP"
fi
phase packages
[ "${1:-}" = "--setup-only" ] && exit 0

KVM=/dev/kvm
KVM_SAVED=""
teardown() {
  local rc=$?
  trap - EXIT INT TERM
  echo "vagrant-tier: tearing down (VMs, networks, daemons)"
  # the BMCs first (they hold libvirt connections), by their pid files, only if they are still ours
  for d in vm-bmc-redfish vm-bmc-ipmi; do
    f=$("$PY" -c "from orchestrator.lab import vm; print(vm.vm_lab_root() / 'run' / '$d.pid')")
    if [ -s "$f" ] && grep -qaE 'sushy-emulator|vm_bmc_serve' "/proc/$(cat "$f")/cmdline" 2>/dev/null; then
      kill "$(cat "$f")" && echo "vagrant-tier: stopped $d (pid $(cat "$f"))"
    fi
    rm -f "$f"
  done
  rm -f /var/lib/orchestrator-vm-lab/bmc/password  # the BMCs' password (inventories/vm-lab.yml's password_file)
  if ! "$PY" -c 'from orchestrator.lab import vm; vm.vm_lab_down()'; then
    echo "vagrant-tier: teardown left something behind (see above)" >&2
    [ "$rc" = 0 ] && rc=1
  fi
  # belt and braces: the daemons this tier started, by the PIDs in their pid files
  for d in libvirtd virtlogd; do
    f=$("$PY" -c "from orchestrator.lab import vm; print(vm.vm_lab_root() / 'run' / '$d.pid')")
    if [ -s "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; then kill "$(cat "$f")"; fi
  done
  if [ -n "$KVM_SAVED" ]; then  # the device as this tier found it
    read -r mode gid <<< "$KVM_SAVED"
    chgrp "$gid" "$KVM" && chmod "$mode" "$KVM" && echo "vagrant-tier: $KVM back to $(stat -c '%A %U:%G' "$KVM")"
  fi
  echo "vagrant-tier: done in $(( $(date +%s) - t0 )) s (exit $rc)"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

# 2. a fresh machine's state (unless VAGRANT_TIER_CACHED=1): no VM lab, no box anywhere, /dev/kvm
#    not usable by libvirt's qemu user
"$PY" -c 'from orchestrator.lab import vm; vm.vm_lab_down()' || die "a VM lab from before could not be removed"
if [ "${VAGRANT_TIER_CACHED:-}" != 1 ]; then
  "$PY" -c '
from orchestrator.lab import vm
for what in vm.forget_box():
    print("vagrant-tier: removed", what)
' || die "the cached box could not be removed"
  if [ -e "$KVM" ]; then
    KVM_SAVED=$(stat -c '%a %g' "$KVM")
    chgrp root "$KVM" && chmod 0660 "$KVM" || die "could not set $KVM to 0660 root:root"
    echo "vagrant-tier: $KVM set to $(stat -c '%A %U:%G' "$KVM") (was $KVM_SAVED), as without udev"
  fi
  export ORCHESTRATOR_VM_TIER_FIRST_TIME=1
fi
phase "fresh state"

# 3. the tests (`lab up` builds the box, starts libvirt, boots the VMs; the tests judge them from
#    outside); no tests collected is a failure
"$BIN/pytest" -q -p no:cacheprovider -m vagrant tests/vagrant -s "$@"
rc=$?
phase tests
if [ "$rc" = 5 ]; then
  die "pytest collected no VM tests: that is a failure, not a pass"
fi
[ "$rc" = 0 ] || die "the VM tests failed (pytest exit $rc)"
