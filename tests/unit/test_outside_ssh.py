"""Hosts never reached over SSH (issue 14): an ``os: windows`` host's probe (RDP, WinRM, SMB, never
port 22) and an ESXi host's view onto vCenter and its BMC (``HypervisorOnVCenter``), on small fakes of
the SSH runner's port probe and of the controllers' drivers. The end-to-end proof is
tests/power/test_estate_runs.py (vcsim, virtualbmc, sushy-emulator)."""

from __future__ import annotations

from typing import Any

import pytest
from test_inventory_estate import ESTATE, FILE, edit

from orchestrator.drivers.base import PowerState
from orchestrator.drivers.controller_power import ControllerSessions, HypervisorOnVCenter
from orchestrator.drivers.power_controllers import NotSupportedError
from orchestrator.errors import DriverError
from orchestrator.inventory import validate_text
from orchestrator.model import Inventory
from orchestrator.verify import Probes

TEXT = edit(edit(ESTATE, "      vm: EMR-DB1\n", "      vm: EMR-DB1\n    os: windows\n"),
            "    power:\n      controller: bmc-esx1\n",
            "    power:\n      controller: vc-antwerp\n      host: esx1.example.org\n      bmc: bmc-esx1\n")


class Ports:
    """The SSH runner's TCP port probe: which address:port answer, and every knock."""

    def __init__(self, answering: set[tuple[str, int]] = frozenset()) -> None:  # type: ignore[assignment]
        self.answering = set(answering)
        self.knocked: list[tuple[str, int]] = []

    def port_open(self, address: str, port: int = 22, timeout_s: float = 1.0) -> bool:
        self.knocked.append((address, port))
        return (address, port) in self.answering


class Power:
    poll_interval_s = 0.01

    def __init__(self, state: PowerState) -> None:
        self.now = state

    def state(self, name: str) -> PowerState:
        return self.now

    def evidence(self, name: str) -> dict[str, object]:
        return {}


def probes(inv: Inventory, ports: Ports, power: Power) -> Probes:
    return Probes(inv, ports, lambda _host: power)  # type: ignore[arg-type,return-value]


@pytest.fixture
def inv() -> Inventory:
    return validate_text(TEXT, FILE).inventory


def test_a_windows_host_is_off_when_its_controller_says_so_and_rdp_winrm_smb_are_silent(inv: Inventory) -> None:
    ports = Ports()
    off = probes(inv, ports, Power("stopped")).host_off(inv.hosts["emr-db1"])
    assert off.passed and "ssh_port_22" not in off.evidence
    assert set(off.evidence["ports"]) == {f"{a}:{p}" for a in ("10.10.2.11", "10.99.2.11")
                                          for p in (3389, 5985, 5986, 445)}
    assert all(port != 22 for _, port in ports.knocked)


@pytest.mark.parametrize("port", [3389, 5985, 5986, 445])
def test_a_windows_host_answering_any_of_its_ports_is_not_off(inv: Inventory, port: int) -> None:
    off = probes(inv, Ports({("10.10.2.11", port)}), Power("stopped")).host_off(inv.hosts["emr-db1"])
    assert not off.passed and off.evidence["ports"][f"10.10.2.11:{port}"] == "answers"


def test_a_windows_host_its_controller_says_runs_is_not_knocked_on(inv: Inventory) -> None:
    ports = Ports()
    off = probes(inv, ports, Power("running")).host_off(inv.hosts["emr-db1"])
    assert not off.passed and off.evidence["ports"] == "not probed (power not known off)"
    assert ports.knocked == []


def test_ssh_is_never_knocked_on_for_windows_or_esxi(inv: Inventory) -> None:
    ports = Ports({("10.99.2.11", 22), ("10.99.2.31", 22), ("10.99.2.12", 22)})
    p = probes(inv, ports, Power("running"))
    assert not p.ssh_answers(inv.hosts["emr-db1"]) and not p.ssh_answers(inv.hosts["esx1"])
    assert ports.knocked == []
    assert p.ssh_answers(inv.hosts["emr-app1"])  # a linux host: as before
    assert ports.knocked == [("10.99.2.12", 22)]


def test_windows_up_needs_the_controller_on_and_one_port(inv: Inventory) -> None:
    host = inv.hosts["emr-db1"]
    assert probes(inv, Ports({("10.99.2.11", 5986)}), Power("running")).windows_up(host).passed
    assert not probes(inv, Ports(), Power("running")).windows_up(host).passed
    assert not probes(inv, Ports({("10.99.2.11", 5986)}), Power("stopped")).windows_up(host).passed


# ---- HypervisorOnVCenter --------------------------------------------------------------------------


class FakeVCenter:
    def __init__(self, shutdown: DriverError | None = None, maintenance_works: bool = True) -> None:
        self.host = {"power_state": "poweredOn", "connection_state": "connected", "maintenance": False}
        self.shutdown = shutdown
        self.maintenance_works = maintenance_works
        self.calls: list[str] = []

    def host_state(self, host: str) -> dict[str, object]:
        return dict(self.host)

    def shutdown_host(self, host: str) -> None:
        self.calls.append(f"shutdown_host {host}")
        if self.maintenance_works:
            self.host["maintenance"] = True
        if self.shutdown is not None:
            raise self.shutdown
        self.host.update(power_state="unknown", connection_state="notResponding")

    def exit_maintenance(self, host: str) -> None:
        self.calls.append(f"exit_maintenance {host}")
        self.host["maintenance"] = False

    def evidence(self, target: str) -> dict[str, object]:
        return {}

    def close(self) -> None:
        pass


class FakeBmc:
    def __init__(self) -> None:
        self.now: PowerState = "running"
        self.calls: list[str] = []

    def state(self, name: str) -> PowerState:
        return self.now

    def power_off(self, name: str, graceful: bool) -> None:
        self.calls.append(f"off graceful={graceful}")
        self.now = "stopped"

    def power_on(self, name: str) -> None:
        self.calls.append("on")
        self.now = "running"

    def evidence(self, name: str) -> dict[str, object]:
        return {}

    def close(self) -> None:
        pass


def view(inv: Inventory, vc: FakeVCenter, bmc: FakeBmc | None) -> HypervisorOnVCenter:
    drivers: dict[str, Any] = {"vc-antwerp": vc, "bmc-esx1": bmc}
    sessions = ControllerSessions(inv, lambda controller: drivers[controller.name])
    v = sessions.view_for(inv.hosts["esx1"])
    assert isinstance(v, HypervisorOnVCenter) and v is sessions.view_for(inv.hosts["esx1"])  # one per run
    return v


def test_esxi_stops_by_vcenter_and_vcenters_word_is_its_state_without_a_bmc() -> None:
    inv = validate_text(edit(TEXT, "      bmc: bmc-esx1\n", ""), FILE).inventory
    vc = FakeVCenter()
    v = view(inv, vc, None)
    assert v.state("esx1") == "running"
    v.power_off("esx1", graceful=True)
    assert vc.calls == ["shutdown_host esx1.example.org"] and v.state("esx1") == "stopped"
    vc.host.update(power_state="poweredOn", connection_state="disconnected")
    assert v.state("esx1") == "stopped"  # vCenter no longer hears it
    with pytest.raises(NotSupportedError, match="no hard power off for a host"):
        v.power_off("esx1", graceful=False)
    v.power_on("esx1")  # nothing to send it to: a person powers it on
    assert v.evidence("esx1")["power_on"] == "nothing sent: no BMC; power it on at the server, vCenter is watched"
    with pytest.raises(DriverError, match="asked about emr-db1"):
        v.state("emr-db1")


def test_when_vcenter_cannot_shut_it_down_its_bmc_does_but_only_in_maintenance_mode(inv: Inventory) -> None:
    bmc = FakeBmc()
    vc = FakeVCenter(shutdown=NotSupportedError("not supported by this endpoint: ShutdownHost_Task"))
    v = view(inv, vc, bmc)
    v.power_off("esx1", graceful=True)
    assert bmc.calls == ["off graceful=True"] and v.state("esx1") == "stopped"  # the BMC's word
    said = v.evidence("esx1")
    assert "not supported by this endpoint" in str(said["vcenter_shutdown"])
    assert said["target"] == "host esx1.example.org"

    bmc2, stuck = FakeBmc(), FakeVCenter(shutdown=DriverError("EnterMaintenanceMode_Task failed"),
                                         maintenance_works=False)
    v2 = view(validate_text(TEXT, FILE).inventory, stuck, bmc2)
    with pytest.raises(DriverError, match=r"did not shut esx1\.example\.org down") as err:
        v2.power_off("esx1", graceful=True)
    assert "not in maintenance mode" in (err.value.hint or "") and bmc2.calls == []


def test_esxi_power_on_is_its_bmcs_and_exit_maintenance_is_vcenters(inv: Inventory) -> None:
    bmc, vc = FakeBmc(), FakeVCenter()
    bmc.now = "stopped"
    v = view(inv, vc, bmc)
    v.power_on("esx1")
    v.power_on("esx1")  # already on: not sent again
    assert bmc.calls == ["on"]
    v.exit_maintenance("esx1")
    assert vc.calls == ["exit_maintenance esx1.example.org"]
    assert v.label == "power.vsphere:vc-antwerp+power.ipmi:bmc-esx1"


def test_no_baseline_is_collected_from_a_windows_or_esxi_host(inv: Inventory, tmp_path: Any) -> None:
    from orchestrator.config import Settings
    from orchestrator.errors import IntegrityError
    from orchestrator.integrity.baseline import capture_baseline

    class NoSsh:
        def run(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("an SSH command was sent")

    settings = Settings(state_dir=tmp_path, state_dir_source="cli")
    for host in ("emr-db1", "esx1"):
        with pytest.raises(IntegrityError, match="collector is Linux-only"):
            capture_baseline(NoSsh(), inv, host, settings)
