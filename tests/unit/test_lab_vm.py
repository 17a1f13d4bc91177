"""The VM lab provider without VMs: the CLI's --provider, the status contract, the power driver's
mapping of libvirt states, the driver choice, the box cache key and Vagrant's network. (The VMs
themselves are the VM tier's: tests/vagrant, scripts/vagrant-tier.sh.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.drivers import power_driver_class
from orchestrator.drivers.power import VagrantPower
from orchestrator.errors import DriverError, LabError
from orchestrator.inventory import load_inventory
from orchestrator.lab import vagrant, vm
from orchestrator.lab.topology import topology
from orchestrator.lab.vm import host, libvirt, lifecycle, vagrant_up

REPO = Path(__file__).resolve().parents[2]
VM_INV = REPO / "inventories" / "vm-lab.yml"


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    code = info.value.code
    return (code if isinstance(code, int) else 1), capsys.readouterr().out


@pytest.fixture
def vm_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(vm.VM_LAB_ROOT_ENV, str(tmp_path / "vm-lab"))
    return tmp_path / "vm-lab"


def test_lab_status_provider_vagrant_keeps_the_contract_when_nothing_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, vm_root: Path
) -> None:
    monkeypatch.setattr(libvirt, "libvirt_answers", lambda: False)
    code, out = cli(capsys, "lab", "status", str(VM_INV), "--provider", "vagrant", "--json")
    assert code == 0
    doc = json.loads(out)
    assert set(doc) == {"machines"}
    names = {m["name"]: m for m in doc["machines"]}
    assert set(names) == {"vm-fw", "vendor-registration", "vm-ad1", "vm-db1", "vm-ws1"}
    for m in names.values():
        assert set(m) == {"name", "kind", "state", "pid", "management_address", "ssh"}
        assert m["state"] == "stopped" and m["pid"] is None
        assert m["ssh"] == {
            "user": "root",
            "key_file": str(vm_root / "ssh" / "id_ed25519"),
            "known_hosts": str(vm_root / "ssh" / "known_hosts"),
        }
    assert names["vm-ad1"]["management_address"] == "10.150.10.10"
    assert (names["vm-fw"]["kind"], names["vendor-registration"]["kind"]) == ("device", "peer")


def test_provider_defaults_to_nspawn_and_refuses_others(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import orchestrator.lab as nspawn_lab

    called: list[str] = []

    def fake_status(inventory: object) -> nspawn_lab.LabStatus:
        called.append("nspawn")
        return nspawn_lab.LabStatus(())

    monkeypatch.setattr(nspawn_lab, "lab_status", fake_status)
    monkeypatch.setattr(vm, "vm_lab_status", lambda inventory: pytest.fail("the VM lab was asked"))
    code, out = cli(capsys, "lab", "status", str(VM_INV), "--json")
    assert code == 0 and called == ["nspawn"] and json.loads(out) == {"machines": []}
    with pytest.raises(SystemExit) as info:
        main(["lab", "status", str(VM_INV), "--provider", "virtualbox"])
    assert info.value.code == 2


def test_vagrant_power_maps_libvirt_states_and_refuses_strangers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert power_driver_class("vagrant") is VagrantPower
    states = {"vm-ad1": "running", "vm-db1": "shut off", "vm-ws1": "crashed", "vm-fw": "paused"}
    monkeypatch.setattr(vm, "lab_machines", lambda: [*states, "gone"])
    monkeypatch.setattr(vm, "vm_state", lambda name: states.get(name))
    power = VagrantPower()
    assert [power.state(n) for n in ("vm-ad1", "vm-db1", "vm-ws1", "vm-fw")] == [
        "running", "stopped", "stopped", "running"
    ]
    with pytest.raises(DriverError, match="not a machine of the running VM lab"):
        power.state("elsewhere")
    with pytest.raises(DriverError, match="libvirt has no such VM"):
        power.state("gone")
    stops: list[tuple[str, bool]] = []
    monkeypatch.setattr(vm, "stop_machine", lambda name, graceful: stops.append((name, graceful)))
    power.power_off("vm-ad1", graceful=True)
    power.power_off("vm-ad1", graceful=False)
    assert stops == [("vm-ad1", True), ("vm-ad1", False)]


def test_vagrant_power_on_waits_for_the_boot_to_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.lab.reach import Readiness

    events: list[str] = []
    monkeypatch.setattr(vm, "lab_machines", lambda: ["vm-ad1"])
    monkeypatch.setattr(vm, "start_machine", lambda name: events.append(f"start {name}"))

    def booted(name: str, timeout: float) -> Readiness:
        events.append(f"wait {name} {timeout:.0f}")
        return Readiness(name, True, "running", 1.0)

    monkeypatch.setattr(vm, "wait_booted", booted)
    VagrantPower(start_timeout=60).power_on("vm-ad1")
    assert events == ["start vm-ad1", "wait vm-ad1 60"]
    monkeypatch.setattr(vm, "wait_booted", lambda name, timeout: Readiness(name, False, "starting", 60.0, "slow"))
    with pytest.raises(DriverError, match="did not finish booting"):
        VagrantPower(start_timeout=60).power_on("vm-ad1")


def test_without_a_vm_lab_the_power_driver_says_so(vm_root: Path) -> None:
    with pytest.raises(DriverError, match="no VM lab is up"):
        VagrantPower().state("vm-ad1")


def test_libvirt_driver_is_kvm_only_with_hardware_virtualisation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(vm.DRIVER_ENV, "kvm")
    assert vm.libvirt_driver() == "kvm"
    monkeypatch.setenv(vm.DRIVER_ENV, "qemu")
    assert vm.libvirt_driver() == "qemu"
    monkeypatch.delenv(vm.DRIVER_ENV)
    flags = Path("/proc/cpuinfo").read_text()
    hardware = Path("/dev/kvm").exists() and (" vmx" in flags or " svm" in flags)
    assert vm.libvirt_driver() == ("kvm" if hardware else "qemu")


def test_the_box_is_rebuilt_only_when_its_recipe_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(REPO / "vagrant", tmp_path / "vagrant")
    monkeypatch.setenv(vm.VAGRANT_DIR_ENV, str(tmp_path / "vagrant"))
    monkeypatch.setenv("ORCHESTRATOR_LAB_CACHE", str(tmp_path / "cache"))
    first = vm.box_path()
    assert first.parent == tmp_path / "cache" and first.name.startswith("vagrant-box-")
    assert vm.box_path() == first, "same recipe, same cached box"
    recipe = tmp_path / "vagrant" / "build-box.sh"
    recipe.write_text(recipe.read_text() + "\n# a change\n")
    assert vm.box_path() != first


def test_vagrants_own_network_never_overlaps_the_lab(tmp_path: Path) -> None:
    inv = load_inventory(VM_INV)
    doc = vagrant.vagrant_dict(inv)
    assert doc["vagrant_network"] == {"name": vagrant.VAGRANT_NETWORK, "address": vagrant.VAGRANT_NETWORK_ADDRESS}
    assert vagrant.network_names(topology(inv))[-1] == vagrant.VAGRANT_NETWORK
    clash = tmp_path / "clash.yml"
    clash.write_text(VM_INV.read_text().replace("10.151.3.", "10.151.250."))  # vm-clinical moves onto it
    with pytest.raises(LabError, match="overlaps Vagrant's own network"):
        vagrant.vagrant_dict(load_inventory(clash))


def test_each_vm_has_a_fixed_domain_uuid_and_the_redfish_system_names_its_vm() -> None:
    """The Vagrantfile forces each domain's UUID (``lv.uuid``), so the Redfish BMC of the VM tier
    (sushy-emulator, which names systems by UUID) can be written in inventories/vm-lab.yml."""
    inv = load_inventory(VM_INV)
    uuids = {m["name"]: m["uuid"] for m in vagrant.vagrant_dict(inv)["machines"]}
    assert len(set(uuids.values())) == len(uuids), "one UUID per VM"
    assert uuids == {m: vagrant.domain_uuid(inv.site.name, m) for m in uuids}, "stable across builds"
    on_redfish = {h.name: h.power_target.system for h in inv.hosts.values()
                  if h.power_target is not None and h.power_target.system is not None}
    assert on_redfish == {"vm-ad1": uuids["vm-ad1"]}
    assert 'lv.uuid = machine["uuid"]' in (REPO / "vagrant" / "Vagrantfile").read_text()


# --------------------------------------------------------------------------------------------
# /dev/kvm: every state the device can be found in (a temp file stands for it; chown is faked)
# --------------------------------------------------------------------------------------------


class FakeOwnership:
    """chown and group lookups that never need root: the temp file's real group stands for ``root``
    or for ``kvm``, as the test says; chmod is real (the file is the test's own)."""

    def __init__(self, kvm_gid: int, *, kvm_exists: bool = True) -> None:
        self.kvm_gid = kvm_gid
        self.kvm_exists = kvm_exists
        self.chowns: list[tuple[Path, int, int]] = []

    def ops(self) -> vm.DeviceOps:
        def group_id(name: str) -> int:
            if name != "kvm" or not self.kvm_exists:
                raise KeyError(name)
            return self.kvm_gid

        return vm.DeviceOps(
            chown=lambda path, uid, gid: self.chowns.append((path, uid, gid)),
            group_id=group_id,
            group_name=lambda gid: "kvm" if gid == self.kvm_gid else "root",
        )


def device(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "kvm"
    path.touch()
    path.chmod(mode)
    return path


def test_kvm_device_0600_root_root_gets_group_kvm_and_group_rw(tmp_path: Path) -> None:
    dev = device(tmp_path, 0o600)
    fake = FakeOwnership(kvm_gid=dev.stat().st_gid + 1)
    change = vm.ensure_kvm_device(dev, ops=fake.ops())
    assert fake.chowns == [(dev, -1, fake.kvm_gid)]
    assert dev.stat().st_mode & 0o777 == 0o660
    assert change is not None and "group root -> kvm" in change and "mode 0600 -> 0660" in change


def test_kvm_device_0660_root_root_gets_group_kvm(tmp_path: Path) -> None:
    """The issue's machine: group rw already, but group root: libvirt's qemu user cannot open it."""
    dev = device(tmp_path, 0o660)
    fake = FakeOwnership(kvm_gid=dev.stat().st_gid + 1)
    change = vm.ensure_kvm_device(dev, ops=fake.ops())
    assert fake.chowns == [(dev, -1, fake.kvm_gid)]
    assert dev.stat().st_mode & 0o777 == 0o660
    assert change is not None and "group root -> kvm" in change and "mode" not in change


def test_kvm_device_0660_root_kvm_is_left_alone(tmp_path: Path) -> None:
    dev = device(tmp_path, 0o660)
    fake = FakeOwnership(kvm_gid=dev.stat().st_gid)
    assert vm.ensure_kvm_device(dev, ops=fake.ops()) is None
    assert fake.chowns == [] and dev.stat().st_mode & 0o777 == 0o660


def test_kvm_device_0666_is_usable_by_anyone_and_left_alone(tmp_path: Path) -> None:
    dev = device(tmp_path, 0o666)
    fake = FakeOwnership(kvm_gid=dev.stat().st_gid + 1)
    assert vm.ensure_kvm_device(dev, ops=fake.ops()) is None
    assert fake.chowns == [] and dev.stat().st_mode & 0o777 == 0o666


def test_kvm_device_absent_is_nothing_to_do(tmp_path: Path) -> None:
    fake = FakeOwnership(kvm_gid=4242)
    assert vm.ensure_kvm_device(tmp_path / "kvm", ops=fake.ops()) is None
    assert fake.chowns == []
    usable, why = vm.kvm_usable(tmp_path / "kvm")
    assert not usable and "does not open" in why


def test_kvm_device_without_a_kvm_group_says_what_to_install(tmp_path: Path) -> None:
    dev = device(tmp_path, 0o600)
    with pytest.raises(LabError, match="no group 'kvm'"):
        vm.ensure_kvm_device(dev, ops=FakeOwnership(4242, kvm_exists=False).ops())


def test_ensure_libvirt_fixes_the_device_and_logs_it_even_when_libvirt_runs(
    monkeypatch: pytest.MonkeyPatch, vm_root: Path
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(libvirt, "ensure_kvm_device", lambda: "/dev/kvm: group root -> kvm")
    monkeypatch.setattr(libvirt, "libvirt_answers", lambda: True)
    lines: list[str] = []
    assert vm.ensure_libvirt(lines.append) is False
    assert lines == ["/dev/kvm: group root -> kvm"]
    log = vm_root / "vm-lab.log"
    assert "/dev/kvm: group root -> kvm" in log.read_text() and log.stat().st_mode & 0o777 == 0o600


def test_kvm_is_used_only_when_the_device_opens_and_the_cpu_has_vt_x(tmp_path: Path) -> None:
    """A character device that is not KVM does not answer KVM's ioctl; a PVM host has no vmx/svm."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("flags\t\t: fpu vme de pse tsc msr hypervisor\n")
    usable, why = vm.kvm_usable(Path("/dev/null"), cpuinfo)
    assert not usable and "does not answer" in why
    if Path("/dev/kvm").exists() and os.access("/dev/kvm", os.R_OK | os.W_OK):
        usable, why = vm.kvm_usable(Path("/dev/kvm"), cpuinfo)
        assert not usable and "no VT-x/AMD-V" in why


# --------------------------------------------------------------------------------------------
# lab up: its time limit, its progress, and what a failed one leaves (nothing running)
# --------------------------------------------------------------------------------------------


def test_the_time_limit_follows_the_work() -> None:
    cached = vm.UpBudget(vms=5, driver="qemu", cpus=2, upload=False, box_mb=143)
    first = vm.UpBudget(vms=5, driver="qemu", cpus=2, upload=True, box_mb=143)
    assert first.seconds > cached.seconds, "the first upload of the box into the pool takes time"
    assert vm.UpBudget(vms=5, driver="qemu", cpus=2, upload=True, box_mb=1430).seconds > first.seconds
    assert vm.UpBudget(vms=5, driver="kvm", cpus=2, upload=False).seconds < cached.seconds / 3
    assert vm.UpBudget(vms=10, driver="qemu", cpus=2, upload=False).seconds > cached.seconds
    assert vm.UpBudget(vms=5, driver="qemu", cpus=8, upload=False).seconds < cached.seconds
    # the machine: 5 emulated VMs on 2 CPUs took 430 s once /dev/kvm was right: room for twice that
    assert cached.seconds >= 2 * 430
    assert "5 VMs under qemu on 2 CPUs, first upload of the box (143 MB)" in first.describe()


def test_the_time_limit_can_be_set_and_a_bad_one_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    budget = vm.UpBudget(vms=5, driver="qemu", cpus=2, upload=False)
    monkeypatch.delenv(vm.UP_TIMEOUT_ENV, raising=False)
    assert vagrant_up.up_timeout(budget) == budget.seconds
    monkeypatch.setenv(vm.UP_TIMEOUT_ENV, "30")
    assert vagrant_up.up_timeout(budget) == 30.0
    monkeypatch.setenv(vm.UP_TIMEOUT_ENV, "soon")
    with pytest.raises(LabError, match="ORCHESTRATOR_VM_LAB_UP_TIMEOUT='soon' is not a number"):
        vagrant_up.up_timeout(budget)


# vagrant 2.3 / vagrant-libvirt 0.11 lines, as `vagrant up --machine-readable` writes them
MACHINE_READABLE = """\
1764700000,,ui,info,Bringing machine 'vm-fw' up with 'libvirt' provider...
1764700001,vm-fw,metadata,provider,libvirt
1764700002,vm-fw,ui,info,==> vm-fw: Uploading base box image as volume into Libvirt storage...
1764700003,vm-fw,ui,info,==> vm-fw: Creating image (snapshot of base box volume).
1764700004,vm-fw,ui,info,==> vm-fw: Creating domain with the following settings...
1764700004,vm-fw,ui,info,==> vm-fw:  -- Name:              olab-vm-fw
1764700009,vm-fw,ui,info,==> vm-fw: Starting domain.
1764700010,vm-fw,ui,info,==> vm-fw: Waiting for domain to get an IP address...
1764700090,vm-fw,ui,info,==> vm-fw: Waiting for machine to boot. This may take a few minutes...
1764700091,vm-fw,ui,info,    vm-fw: SSH address: 10.151.250.12:22
1764700190,vm-fw,ui,info,==> vm-fw: Machine booted and ready!
1764700191,vm-fw,ui,info,==> vm-fw: Running provisioner: hostkey (file)...
1764700192,vm-fw,ui,info,==> vm-fw: Running provisioner: lab (shell)...
1764700193,vm-fw,ui,output,    vm-fw: a%!(VAGRANT_COMMA) b\\nc
1764700200,vm-fw,action,up,end
"""


def test_vagrants_machine_readable_lines_give_each_vms_stage(tmp_path: Path) -> None:
    assert vm.parse_machine_readable("1764700193,vm-fw,ui,output,    vm-fw: a%!(VAGRANT_COMMA) b\\nc") == (
        "vm-fw", "    vm-fw: a, b\nc")
    assert vm.parse_machine_readable("1764700001,vm-fw,metadata,provider,libvirt") is None
    lines: list[str] = []
    with (tmp_path / "up.log").open("w") as log:
        follower = vagrant_up.UpProgress(log, ["vm-fw"], lines.append, started=0.0)
        for raw in MACHINE_READABLE.splitlines(keepends=True):
            follower.line(raw)
    stages = [line.split(": ", 1)[1].rsplit(" (", 1)[0] for line in lines]
    assert stages == [
        "uploading the box into the libvirt pool (first time only)", "creating its disk", "defining the VM",
        "starting", "booting (waiting for its address)", "booting (waiting for SSH)", "booted",
        "provisioning (its pinned host key)", "provisioning (networks, nftables, services)",
        "up (booted and provisioned)",
    ]
    assert all(line.startswith("vm-fw: ") for line in lines)
    text = (tmp_path / "up.log").read_text()
    assert "==> vm-fw: Starting domain.\n" in text and "a, b\nc" in text and "%!(VAGRANT_COMMA)" not in text


def test_a_kernel_panic_on_a_vms_console_is_reported_once_until_it_is_up(tmp_path: Path) -> None:
    """What the CI machine's vm-fw printed under emulation; the box now boots with no_timer_check and
    panic=5, and lab up says so at once instead of waiting out vagrant's boot timeout in silence."""
    console = tmp_path / "vm-fw.log"
    console.write_bytes(b"SYSLINUX 6.04\r\n[    0.016000] Kernel panic - not syncing: IO-APIC + timer doesn't work!"
                        b"  Boot with apic=debug\r\n")
    lines: list[str] = []
    with (tmp_path / "up.log").open("w") as log:
        follower = vagrant_up.UpProgress(log, ["vm-fw", "vm-db1"], lines.append, started=0.0, console_dir=tmp_path)
        follower.check_consoles()
        follower.check_consoles()
        assert len(lines) == 1 and lines[0].startswith("vm-fw: kernel panic at boot (IO-APIC + timer doesn't work!")
        with console.open("ab") as more:
            more.write(b"[    0.02] Kernel panic - not syncing: VFS: Unable to mount root fs\n")
        follower.check_consoles()
        assert len(lines) == 2 and "VFS: Unable to mount root fs" in lines[1]
        follower.line("1764700200,vm-fw,action,up,end\n")
        with console.open("ab") as more:
            more.write(b"Kernel panic - not syncing: at shutdown, not at boot\n")
        follower.check_consoles()
    assert len(lines) == 3 and lines[2].startswith("vm-fw: up (booted and provisioned)")


def test_the_box_boots_without_the_timer_check_and_restarts_on_a_panic() -> None:
    append = next(line for line in (vm.vagrant_dir() / "build-box.sh").read_text().splitlines()
                  if line.strip().startswith("APPEND "))
    assert {"no_timer_check", "panic=5"} <= set(append.split())


def test_a_vagrant_up_past_its_limit_is_stopped_with_everything_it_started(
    tmp_path: Path, vm_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in `vagrant` (a shell script on PATH) that starts a child and never ends."""
    fake = tmp_path / "bin" / "vagrant"
    fake.parent.mkdir()
    child_pid = tmp_path / "child.pid"
    fake.write_text(
        "#!/bin/sh\n"
        "echo '1764700003,vm-fw,ui,info,==> vm-fw: Creating image (snapshot of base box volume).'\n"
        "echo '1764700090,vm-fw,ui,info,==> vm-fw: Waiting for machine to boot. This may take a few minutes...'\n"
        f"sleep 300 & echo $! > {child_pid}\n"
        "wait\n"
    )
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}
    monkeypatch.setattr(vagrant_up, "PROGRESS_EVERY_S", 0.5)
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(LabError, match=r"did not finish within 2 s .*vm-fw booting \(waiting for SSH\)"):
        vagrant_up.run_vagrant_up(tmp_path / "up.log", ["vm-fw"], timeout=2, env=env, progress=lines.append)
    assert time.monotonic() - started < 20
    assert [line.rsplit(" (", 1)[0] for line in lines[:2]] == ["vm-fw: creating its disk",
                                                              "vm-fw: booting (waiting for SSH)"]
    assert any(re.fullmatch(r"[0-9]+ s: vm-fw booting \(waiting for SSH\)", line) for line in lines[2:]), (
        "while it waits, where every VM is, every PROGRESS_EVERY_S")
    stat = Path(f"/proc/{int(child_pid.read_text())}/stat")
    for _ in range(50):  # gone, or a zombie left to a PID 1 that does not reap
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail("vagrant's child outlived it")


def test_a_failed_vm_lab_up_removes_what_it_started_and_keeps_the_console_logs(
    monkeypatch: pytest.MonkeyPatch, vm_root: Path
) -> None:
    removed: list[tuple[object, bool]] = []
    monkeypatch.setattr(host, "missing_vm_packages", lambda: [])

    def remove(inventory: object, *, stop_daemons: bool) -> list[str]:
        removed.append((inventory, stop_daemons))
        return []

    monkeypatch.setattr(lifecycle, "_remove_locked", remove)

    def too_slow(*args: object) -> vm.LabStatus:
        raise LabError("`vagrant up` did not finish within 5 s (log: x)", target="vm lab", hint="see the consoles")

    monkeypatch.setattr(lifecycle, "_up_locked", too_slow)
    inv = load_inventory(VM_INV)
    lines: list[str] = []
    with pytest.raises(LabError) as info:
        vm.vm_lab_up(inv, progress=lines.append)
    assert removed == [(inv, True)], "VMs, networks and the daemons it started are removed"
    assert "did not finish within 5 s" in info.value.message
    assert "removed the VMs, networks and daemons it started" in info.value.message
    assert f"console logs kept: {vm_root / 'console'}/NAME.log" in str(info.value.hint)
    assert any("removing the VMs" in line for line in lines)

    def interrupted(*args: object) -> vm.LabStatus:
        raise KeyboardInterrupt

    monkeypatch.setattr(lifecycle, "_up_locked", interrupted)
    with pytest.raises(KeyboardInterrupt):
        vm.vm_lab_up(inv)
    assert len(removed) == 2, "Ctrl-C during lab up removes what it started too"


def test_a_failed_vm_lab_up_says_what_it_could_not_remove(monkeypatch: pytest.MonkeyPatch, vm_root: Path) -> None:
    monkeypatch.setattr(host, "missing_vm_packages", lambda: [])
    monkeypatch.setattr(lifecycle, "_remove_locked", lambda inventory, stop_daemons: ["domain olab-vm-fw"])
    monkeypatch.setattr(lifecycle, "_up_locked", lambda *a: (_ for _ in ()).throw(LabError("boom", target="vm lab")))
    with pytest.raises(LabError, match="boom; could not remove: domain olab-vm-fw"):
        vm.vm_lab_up(load_inventory(VM_INV))


def test_another_vm_lab_is_never_removed_by_a_refused_up(monkeypatch: pytest.MonkeyPatch, vm_root: Path) -> None:
    monkeypatch.setattr(host, "missing_vm_packages", lambda: [])
    vm_root.mkdir(parents=True)
    (vm_root / vm.STATE_FILE).write_text(json.dumps({"lab_id": "another", "inventory": "other.yml"}))
    monkeypatch.setattr(lifecycle, "_remove_locked", lambda *a, **k: pytest.fail("the other lab was removed"))
    with pytest.raises(LabError, match="a different VM lab is up"):
        vm.vm_lab_up(load_inventory(VM_INV))


def test_the_box_and_the_vm_tools_are_made_with_the_usual_umask_not_the_clis_private_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vm_root: Path
) -> None:
    """The CLI runs under umask 077; a box built under it has 0600 networkd files and VMs that never
    ask for an address. A stand-in build-box.sh records the umask it was given."""
    shutil.copytree(REPO / "vagrant", tmp_path / "vagrant")
    (tmp_path / "vagrant" / "build-box.sh").write_text('umask > "$1"\n')
    monkeypatch.setenv(vm.VAGRANT_DIR_ENV, str(tmp_path / "vagrant"))
    monkeypatch.setenv("ORCHESTRATOR_LAB_CACHE", str(tmp_path / "cache"))
    previous = os.umask(0o077)
    try:
        box = vm.ensure_box()
        ran = host.run(["sh", "-c", "umask"]).stdout.strip()
    finally:
        os.umask(previous)
    assert box.built and box.path.read_text().strip() == "0022"
    assert ran == "0022"
    assert "\numask 022" in (REPO / "vagrant" / "build-box.sh").read_text(), "also when run by hand"


def test_the_vm_lab_guards_every_lab_range_with_a_low_priority_blackhole_until_lab_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.lab import network

    monkeypatch.setenv(vm.VM_LAB_ROOT_ENV, str(tmp_path / "vmlab"))
    routes: dict[str, dict[str, object]] = {}

    def run_ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if args[:4] == ("-j", "route", "show", "exact"):
            return subprocess.CompletedProcess(args, 0, json.dumps([routes[args[4]]] if args[4] in routes else []), "")
        verb, _, net, _, metric = args[1:6]
        if verb == "add":
            routes[net] = {"type": "blackhole", "metric": int(metric)}
        else:
            routes.pop(net)
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(network, "run_ip", run_ip)
    inv = load_inventory(VM_INV)
    lifecycle._guard_lab_ranges(inv)
    lifecycle._guard_lab_ranges(inv)  # idempotent
    # one bit wider than each range the lab uses: libvirt refuses a network whose exact prefix is routed
    assert sorted(routes) == ["10.150.0.0/15", "10.152.0.0/23"]
    assert all(r == {"type": "blackhole", "metric": network.GUARD_METRIC} for r in routes.values())
    assert lifecycle._unguard_lab_ranges() == [] and routes == {}


def test_the_pool_lets_qemu_through_whatever_the_private_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """qemu runs as libvirt-qemu and opens its image by path: under the CLI's 077 umask the pool and
    the lab root came out 0700 and every VM failed "Cannot access storage file ... Permission denied"."""
    root = tmp_path / "vm-lab"
    monkeypatch.setenv(vm.VM_LAB_ROOT_ENV, str(root))
    asked: list[tuple[str, ...]] = []
    monkeypatch.setattr(libvirt, "virsh", lambda *args: subprocess.CompletedProcess(args, 1, "", "no pool"))
    monkeypatch.setattr(libvirt, "virsh_ok", lambda *args, **kwargs: asked.append(args))
    old = os.umask(0o077)
    try:
        libvirt.ensure_pool()
    finally:
        os.umask(old)
    for directory in (root, root / "pool"):
        assert directory.stat().st_mode & 0o777 == 0o711, oct(directory.stat().st_mode)
    assert asked[0][:3] == ("pool-define-as", host.POOL, "dir")
