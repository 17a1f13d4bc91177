"""The rehearsal on real VMs, through the console script, judged from outside (libvirt, SSH, ping):
`lab status --json` and the pinned keys, baseline, a tampered VM named by the integrity check,
contain (segments isolated, vendor cut, management working), shutdown (libvirt says shut off, SSH
gone), a staged restore that keeps the tampered VM off and isolated (exit 1) while everything else
comes back clean, and the power driver's halt and power on.

Two hosts are powered through BMCs, as physical servers are (tests/vagrant/vm_bmcs.py): vm-ad1
through Redfish (sushy-emulator, libvirt driver) and vm-db1 through IPMI (virtualbmc). At shutdown
both hang: their in-guest power off never finishes (poweroff.target masked for this boot) and they
ignore the ACPI power button (logind HandlePowerKey=ignore), so the product escalates each to its
BMC, graceful (GracefulShutdown, chassis soft) and then hard (ForceOff, chassis off), and restore
powers them on through the BMC. Every state is libvirt's own (`virsh domstate`), never the product's.

The tests of this module run in order and share one state directory and one boot of the lab: they
tell one incident. Software emulation is slow, so every step is one the story needs.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cli_helpers
import paramiko
import pytest
from cli_helpers import VM_LAB_YML, last_run_id, records
from vm_bmcs import IPMI, REDFISH, VmBmcs

from orchestrator.drivers.power import VagrantPower
from orchestrator.lab import LabStatus, vm
from orchestrator.lab.vagrant import domain_name, domain_uuid
from orchestrator.model import Inventory

INV = VM_LAB_YML
TAMPERED = "vm-ws1"
PLANTED_BINARY = "/usr/local/bin/updater"
INTRUDER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeFakeFakeFakeFakeFakeFakeFakeFakeFake intruder"
Run = Callable[..., Any]


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vm-state")


def orch(state_dir: Path | None, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """The console script on this incident's state directory; emulated VMs are slow."""
    return cli_helpers.orch(state_dir, *args, timeout=1800)


def pings(run: Run, machine: str, address: str) -> bool:
    return bool(run(machine, f"ping -n -q -c 3 -i 0.3 -W 2 {address}", check=False).rc == 0)


def addr(inv: Inventory, host: str) -> str:
    return str(inv.hosts[host].address)


def libvirt_state(machine: str) -> str:
    """What libvirt itself says, asked directly (not through the product)."""
    out = subprocess.run(["virsh", "-c", "qemu:///system", "domstate", domain_name(machine)],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


class DomstateWatch:
    """Polls ``virsh domstate`` of some VMs in the background; ``went_off[machine]`` is the
    ``time.monotonic()`` (system-wide: comparable with the journal's ``mono``) it first said shut off."""

    def __init__(self, machines: list[str]) -> None:
        self.went_off: dict[str, float] = {}
        self._machines = machines
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for m in self._machines:
                if m not in self.went_off and libvirt_state(m) == "shut off":
                    self.went_off[m] = time.monotonic()
            time.sleep(0.05)

    def __enter__(self) -> DomstateWatch:
        assert all(libvirt_state(m) == "running" for m in self._machines)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


# Makes a VM hang at shutdown, for this boot only (/run): its own power off never finishes and it ignores
# the ACPI power button, as a server whose OS hangs in its shutdown does.
HANG = ("systemctl mask --runtime --quiet poweroff.target && install -d /run/systemd/logind.conf.d && "
        "printf '[Login]\\nHandlePowerKey=ignore\\n' > /run/systemd/logind.conf.d/90-hang.conf && "
        "systemctl restart systemd-logind")


def ssh_port_open(address: str) -> bool:
    try:
        socket.create_connection((address, 22), timeout=2).close()
    except OSError:
        return False
    return True


# --------------------------------------------------------------------------------------------


def test_status_has_the_lab_contract_and_pinned_keys_log_in(
    vm_lab: LabStatus, vm_inventory: Inventory, vm_ssh: Any
) -> None:
    res = orch(None, "lab", "status", INV, "--provider", "vagrant", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert set(doc) == {"machines"}
    names = {m["name"]: m for m in doc["machines"]}
    assert set(names) == {"vm-fw", "vendor-registration", "vm-ad1", "vm-db1", "vm-ws1"}
    for name, m in names.items():
        assert set(m) == {"name", "kind", "state", "pid", "management_address", "ssh"}
        assert m["state"] == "running", name
        assert Path(f"/proc/{m['pid']}/comm").read_text().startswith("qemu"), "pid is the VM's hypervisor"
        assert set(m["ssh"]) == {"user", "key_file", "known_hosts"}
        assert m["ssh"]["user"] == "root" and Path(m["ssh"]["known_hosts"]).is_file()
        assert m["management_address"] == vm_lab.machine(name).management_address
    assert names["vm-fw"]["kind"] == "device" and names["vendor-registration"]["kind"] == "peer"
    # the pinned host key is checked strictly; each VM has its own (no clone shares one)
    seen = set()
    for name, m in names.items():
        client = vm_ssh.client(m["management_address"])
        try:
            key = client.get_transport().get_remote_server_key().get_base64()
            _in, out, _err = client.exec_command("hostname")
            assert out.read().decode().strip() == name
        finally:
            client.close()
        seen.add(key)
    assert len(seen) == len(names)
    bogus = paramiko.SSHClient()
    bogus.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.SSHException):
        bogus.connect(names["vm-ad1"]["management_address"], username="root", timeout=15,
                      key_filename=names["vm-ad1"]["ssh"]["key_file"], look_for_keys=False, allow_agent=False)
    bogus.close()


def test_the_bmcs_front_their_vms_and_power_status_reads_them(
    vm_bmcs_up: VmBmcs, vm_inventory: Inventory
) -> None:
    """The Redfish system of the inventory is the VM's libvirt domain (fixed UUID), and `power status`
    (read-only) reads both BMCs over their real protocols: running, matching the hosts' own probes."""
    target = vm_inventory.hosts[vm_bmcs_up.redfish_host].power_target
    assert target is not None and target.system == domain_uuid(vm_inventory.site.name, vm_bmcs_up.redfish_host)
    out = subprocess.run(["virsh", "-c", "qemu:///system", "domuuid", domain_name(vm_bmcs_up.redfish_host)],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == target.system
    res = orch(None, "power", "status", INV, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert {c["name"]: c["ok"] for c in doc["controllers"]} == {REDFISH: True, IPMI: True}
    hosts = {h["name"]: h for h in doc["hosts"]}
    assert set(hosts) == {vm_bmcs_up.redfish_host, vm_bmcs_up.ipmi_host}
    for name, h in hosts.items():
        assert (h["state"], h["probe"], h["mismatch"], h["error"]) == ("on", "answers", False, None), (name, h)
    assert password_never_leaked(vm_bmcs_up, res.stdout + res.stderr)
    # both BMCs listen on loopback only, and are the processes the fixture started
    for name, c in ((REDFISH, vm_bmcs_up.redfish), (IPMI, vm_bmcs_up.ipmi)):
        assert Path(f"/proc/{vm_bmcs_up.pids[name]}").exists(), name
        sockets = subprocess.run(["ss", "-H", "-ln", "-tu", f"sport = :{c.effective_port}"], capture_output=True,
                                 text=True, check=True).stdout.split("\n")
        local = {line.split()[4] for line in sockets if line.strip()}
        assert local == {f"127.0.0.1:{c.effective_port}"}, (name, local)


def password_never_leaked(bmcs: VmBmcs, text: str) -> bool:
    assert bmcs.redfish.password_file is not None
    return Path(bmcs.redfish.password_file).read_text().strip() not in text


def newest_baseline(state_dir: Path, host: str) -> Path:
    """The host's newest baseline: ``baselines/HOST/TAKEN.json`` (one per capture), else ``baselines/HOST.json``."""
    versions = sorted((state_dir / "baselines" / host).glob("*.json"), reverse=True)
    return versions[0] if versions else state_dir / "baselines" / f"{host}.json"


def test_baseline_then_tampering_is_named_by_integrity_check(state_dir: Path, vm_run: Run) -> None:
    res = orch(state_dir, "baseline", "capture", INV)
    assert res.returncode == 0, res.stdout + res.stderr
    for host in ("vm-ad1", "vm-db1", "vm-ws1"):
        # every part of the collector ran to completion (an emulated VM is slow: nothing timed out)
        snapshot = json.loads(newest_baseline(state_dir, host).read_text())["snapshot"]
        failed = {part: rc for part, rc in snapshot["collected"].items() if rc != 0}
        assert not failed, f"{host}: collector parts failed: {failed}"
        assert snapshot["units"] and snapshot["timers"], host
    vm_run(TAMPERED, f"printf '#!/bin/sh\\nexit 0\\n' > {PLANTED_BINARY} && chmod 755 {PLANTED_BINARY}")
    vm_run(TAMPERED, f"echo '{INTRUDER}' >> /root/.ssh/authorized_keys")
    res = orch(state_dir, "integrity", "check", INV, "--host", TAMPERED)
    assert res.returncode == 1, res.stdout + res.stderr
    assert PLANTED_BINARY in res.stdout and "/root/.ssh/authorized_keys" in res.stdout
    # (the untouched VMs are checked clean by the restore below: no separate check, emulation is slow)


def test_contain_only_isolates_the_segments_and_cuts_the_vendor_while_management_works(
    state_dir: Path, vm_run: Run, vm_inventory: Inventory
) -> None:
    inv = vm_inventory
    assert pings(vm_run, "vm-ad1", addr(inv, "vm-ws1")), "before: the segments reach each other"
    assert pings(vm_run, "vendor-registration", addr(inv, "vm-ad1")), "before: the vendor reaches in"
    res = orch(state_dir, "shutdown", INV, "--contain-only", "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "time to containment" in res.stdout
    assert not pings(vm_run, "vm-ad1", addr(inv, "vm-ws1"))
    assert not pings(vm_run, "vm-ws1", addr(inv, "vm-db1"))
    assert pings(vm_run, "vm-ad1", addr(inv, "vm-db1")), "inside a segment, hosts still reach each other"
    assert not pings(vm_run, "vendor-registration", addr(inv, "vm-ad1"))
    assert not pings(vm_run, "vendor-registration", addr(inv, "vm-ws1"))
    for name in ("vm-fw", "vendor-registration", *inv.hosts):
        assert libvirt_state(name) == "running", name
        assert vm_run(name, "true").rc == 0, f"management lost to {name}"
    assert orch(state_dir, "journal", "verify", last_run_id(state_dir)).returncode == 0


def test_shutdown_powers_the_hosts_off_in_dependency_order_escalating_hung_ones_to_their_bmcs(
    state_dir: Path, vm_inventory: Inventory, vm_run: Run, vm_bmcs_up: VmBmcs
) -> None:
    hung = {vm_bmcs_up.redfish_host: REDFISH, vm_bmcs_up.ipmi_host: IPMI}
    for name in hung:
        vm_run(name, HANG)
        assert vm_run(name, "systemctl is-enabled poweroff.target", check=False).stdout.strip() == "masked-runtime"
    with DomstateWatch(sorted(hung)) as watch:
        res = orch(state_dir, "shutdown", INV, "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "time to shutdown" in res.stdout
    assert password_never_leaked(vm_bmcs_up, res.stdout + res.stderr)
    for name, host in vm_inventory.hosts.items():
        assert libvirt_state(name) == "shut off", name
        assert not ssh_port_open(str(host.management_address)), name
    assert libvirt_state("vm-fw") == "running" and vm_run("vm-fw", "true").rc == 0
    recs = records(state_dir, last_run_id(state_dir))
    order = [r["step_id"].split(":", 1)[1] for r in recs
             if r["type"] == "step-finished" and r["step_id"].startswith("stop-host:")]
    assert order.index("vm-ws1") < order.index("vm-db1") < order.index("vm-ad1")
    status = {m.name: m for m in vm.vm_lab_status(vm_inventory).machines}
    assert all(status[h].state == "stopped" and status[h].pid is None for h in vm_inventory.hosts)
    done = {r["step_id"]: r for r in recs if r["type"] == "step-finished"}
    assert not done["stop-host:vm-ws1"]["escalated"], "a host that obeys its own power off is not escalated"
    latency = {}
    for name, controller in hung.items():
        step = f"stop-host:{name}"
        assert done[step]["status"] == "verified" and done[step]["escalated"], name
        tried = [r["to"] for r in recs if r["type"] == "escalation" and r["step_id"] == step]
        assert tried == ["out-of-band graceful power off", "out-of-band hard power off"], (name, tried)
        said = done[step]["evidence"]["after"]["out_of_band"]
        graceful = said["out-of-band graceful power off"]["last_operation"]
        hard = said["out-of-band hard power off"]["last_operation"]
        if controller == REDFISH:
            assert (graceful["reset_type"], hard["reset_type"]) == ("GracefulShutdown", "ForceOff"), said
        else:
            assert (graceful["chassis_control"], hard["chassis_control"]) == ("soft", "off"), said
        assert hard["power_state"] in ("Off", "off")
        # judged by libvirt: the VM ignored the graceful request and went off only after the hard one
        hard_sent = next(r["mono"] for r in recs if r["type"] == "escalation" and r["step_id"] == step
                         and r["to"] == "out-of-band hard power off")
        assert name in watch.went_off, name
        latency[controller] = watch.went_off[name] - hard_sent
        assert 0 < latency[controller] < 10, (name, latency)
    print(f"\nVM tier power-off latency (hard request to `virsh domstate` shut off): "
          f"Redfish ForceOff {latency[REDFISH]:.2f} s, IPMI chassis power off {latency[IPMI]:.2f} s")


def test_staged_restore_keeps_the_tampered_vm_out_and_brings_the_rest_back_clean(
    state_dir: Path, vm_inventory: Inventory, vm_run: Run
) -> None:
    inv = vm_inventory
    res = orch(state_dir, "restore", INV, "--approve", "all")
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert TAMPERED in out and PLANTED_BINARY in out and "/root/.ssh/authorized_keys" in out
    run_id = last_run_id(state_dir)
    recs = records(state_dir, run_id)
    findings = {(r["host"], r["path"]) for r in recs if r["type"] == "integrity-finding"}
    assert {h for h, _ in findings} == {TAMPERED}, f"only the tampered VM differs: {sorted(findings)}"
    assert {PLANTED_BINARY, "/root/.ssh/authorized_keys"} <= {p for _, p in findings}
    quarantine = [r for r in recs if r["type"] == "quarantine"]
    assert [(r["host"], r["powered_off"]) for r in quarantine] == [(TAMPERED, True)]
    finished = {r["step_id"]: r["status"] for r in recs if r["type"] == "step-finished"}
    for step in ("start-host", "check-integrity", "check-health"):
        for host in ("vm-ad1", "vm-db1"):
            assert finished[f"{step}:{host}"] == "verified", (step, host)
    assert finished[f"check-integrity:{TAMPERED}"] == "failed"
    assert finished["restore-link:vendor-registration"] == "verified"
    # the tampered VM stays quarantined: off (libvirt says so, SSH is gone), never reconnected running
    assert libvirt_state(TAMPERED) == "shut off", "a tampered VM stays quarantined (off)"
    assert not ssh_port_open(str(inv.hosts[TAMPERED].management_address))
    order = [r["step_id"] for r in recs if r["type"] == "step-finished"]
    assert order.index(f"check-integrity:{TAMPERED}") < order.index("reconnect-segment:vm-clinical")
    assert order[-1] == "restore-link:vendor-registration", "external links come back last"
    # everything else is back: running, reachable over management, the servers' segment reconnected,
    # the vendor link restored (last), and a fresh integrity check finds them clean
    for name in ("vm-fw", "vendor-registration", "vm-ad1", "vm-db1"):
        assert libvirt_state(name) == "running", name
        assert vm_run(name, "true").rc == 0, name
    # the BMCs' hosts were powered on through their BMCs
    powered_on = {r["target"]: r["driver"] for r in recs if r["type"] == "command-sent"
                  and r["commands"] == ["power on"]}
    assert powered_on["vm-ad1"] == f"power.redfish:{REDFISH}" and powered_on["vm-db1"] == f"power.ipmi:{IPMI}"
    assert finished["reconnect-segment:vm-servers"] == "verified"
    assert pings(vm_run, "vm-db1", addr(inv, "vm-ad1"))
    assert pings(vm_run, "vendor-registration", addr(inv, "vm-ad1")), "the vendor link comes back last"
    assert orch(state_dir, "journal", "verify", run_id).returncode == 0


def test_the_vagrant_power_driver_halts_a_vm_with_its_power_button(
    state_dir: Path, vm_inventory: Inventory, vm_ssh: Any
) -> None:
    """The restore above powered the tampered VM on (start-host) and pulled its plug (quarantine)
    through this driver; what is left is the ACPI power button, on a VM that runs. (No boot: slow.)"""
    recs = records(state_dir, last_run_id(state_dir))
    powered_on = {(r["driver"], r["target"]) for r in recs if r["type"] == "command-sent"
                  and r["commands"] == ["power on"]}
    assert ("power.vagrant", TAMPERED) in powered_on
    power = VagrantPower()
    host = "vm-db1"
    address = str(vm_inventory.hosts[host].management_address)
    assert power.state(host) == "running"
    pid = vm.qemu_pid(host)
    assert pid is not None and Path(f"/proc/{pid}/comm").read_text().startswith("qemu")
    vm_ssh.client(address).close()  # the pinned host key survived the power cycle of the restore
    power.power_off(host, graceful=True)
    deadline = time.monotonic() + 180
    while libvirt_state(host) != "shut off":
        assert time.monotonic() < deadline, "the VM did not halt after its power button was pressed"
        time.sleep(1)
    assert power.state(host) == "stopped" and not ssh_port_open(address)
    assert not Path(f"/proc/{pid}").exists(), "its hypervisor process is gone"
    assert power.state(TAMPERED) == "stopped"
