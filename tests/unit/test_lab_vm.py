"""The VM lab provider without VMs: the CLI's --provider, the status contract, the power driver's
mapping of libvirt states, the driver choice, the box cache key and Vagrant's network. (The VMs
themselves are the VM tier's: tests/vagrant, scripts/vagrant-tier.sh.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.drivers import power_driver_class
from orchestrator.drivers.power import VagrantPower
from orchestrator.errors import DriverError, LabError
from orchestrator.inventory import load_inventory
from orchestrator.lab import vagrant, vm
from orchestrator.lab.topology import topology

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
    monkeypatch.setattr(vm, "libvirt_answers", lambda: False)
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
