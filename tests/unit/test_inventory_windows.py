"""``os: windows`` hosts and vCenter-powered hypervisors in the inventory: parsed, and refused with file:line
and a fix when they cannot work (issue 14)."""

from __future__ import annotations

from test_inventory_estate import ESTATE, FILE, edit, line_of, the_problem

from orchestrator.inventory import validate_text
from orchestrator.model import HostOs, PowerTarget

WINDOWS_DB = edit(ESTATE, "      vm: EMR-DB1\n", "      vm: EMR-DB1\n    os: windows\n")


def test_os_defaults_to_linux_and_windows_is_parsed() -> None:
    inv = validate_text(WINDOWS_DB, FILE).inventory
    assert inv.hosts["emr-db1"].os is HostOs.WINDOWS
    assert inv.hosts["emr-app1"].os is HostOs.LINUX


def test_an_unknown_os_is_refused_with_its_line() -> None:
    text = edit(ESTATE, "      vm: EMR-DB1\n", "      vm: EMR-DB1\n    os: windoze\n")
    problem = the_problem(text, "hosts.emr-db1.os", line_of(text, "os: windoze"), "windoze")
    assert "linux, windows" in problem.hint


def test_a_windows_host_without_a_power_controller_is_refused() -> None:
    text = edit(WINDOWS_DB, "    power:\n      controller: vc-antwerp\n      vm: EMR-DB1\n", "    power: manual\n")
    problem = the_problem(text, "hosts.emr-db1.power", line_of(text, "power: manual"), "windows")
    assert "power_controllers" in problem.hint


def test_a_windows_host_without_power_at_all_is_refused_at_its_os_line() -> None:
    text = edit(WINDOWS_DB, "    power:\n      controller: vc-antwerp\n      vm: EMR-DB1\n", "")
    the_problem(text, "hosts.emr-db1.os", line_of(text, "os: windows"), "windows")


# --------------------------------------------------------------------------------------------
# a hypervisor powered through vCenter: power: {controller: VC, host: ESXI[, bmc: BMC]}
# --------------------------------------------------------------------------------------------

ESX_VIA_VC = edit(ESTATE, "    power:\n      controller: bmc-esx1\n",
                  "    power:\n      controller: vc-antwerp\n      host: esx1.example.org\n      bmc: bmc-esx1\n")


def test_a_hypervisor_through_vcenter_with_its_bmc_is_parsed() -> None:
    inv = validate_text(ESX_VIA_VC, FILE).inventory
    esx = inv.hosts["esx1"]
    assert esx.power_target == PowerTarget("vc-antwerp", host="esx1.example.org", bmc="bmc-esx1")
    assert esx.never_ssh and not inv.hosts["emr-db1"].never_ssh


def test_host_fits_only_a_vsphere_controller() -> None:
    text = edit(ESTATE, "      controller: bmc-esx1\n", "      controller: bmc-esx1\n      host: esx1\n")
    problem = the_problem(text, "hosts.esx1.power.host", line_of(text, "      host: esx1"), "does not fit")
    assert "ipmi" in problem.message


def test_host_is_only_for_a_hypervisor() -> None:
    text = edit(ESTATE, "      vm: EMR-DB1\n", "      host: esx9\n")
    the_problem(text, "hosts.emr-db1.power.host", line_of(text, "host: esx9"), "not a hypervisor")


def test_vm_and_host_together_are_refused() -> None:
    text = edit(ESX_VIA_VC, "      host: esx1.example.org\n", "      host: esx1.example.org\n      vm: ESX1\n")
    the_problem(text, "hosts.esx1.power.vm", line_of(text, "vm: ESX1"), "either vm")


def test_an_unknown_bmc_and_a_bmc_that_is_a_vcenter_are_refused() -> None:
    text = edit(ESX_VIA_VC, "      bmc: bmc-esx1\n", "      bmc: bmc-esx9\n")
    the_problem(text, "hosts.esx1.power.bmc", line_of(text, "bmc: bmc-esx9"), "unknown power controller")
    text = edit(ESX_VIA_VC, "      bmc: bmc-esx1\n", "      bmc: vc-antwerp\n")
    the_problem(text, "hosts.esx1.power.bmc", line_of(text, "bmc: vc-antwerp"), "not a server's BMC")


def test_bmc_without_host_is_refused() -> None:
    text = edit(ESTATE, "      vm: EMR-DB1\n", "      vm: EMR-DB1\n      bmc: bmc-esx1\n")
    the_problem(text, "hosts.emr-db1.power.bmc", line_of(text, "bmc: bmc-esx1"), "does not fit")


def test_system_goes_with_a_redfish_bmc_only() -> None:
    text = edit(ESX_VIA_VC, "      bmc: bmc-esx1\n", "      bmc: bmc-esx1\n      system: \"1\"\n")
    the_problem(text, "hosts.esx1.power.system", line_of(text, "system: \"1\"", 2), "no redfish bmc")
    ok = edit(ESX_VIA_VC, "      bmc: bmc-esx1\n", "      bmc: bmc-san1\n      system: \"2\"\n")
    assert validate_text(ok, FILE).inventory.hosts["esx1"].power_target == PowerTarget(
        "vc-antwerp", system="2", host="esx1.example.org", bmc="bmc-san1")


# --------------------------------------------------------------------------------------------
# the plan says what these hosts get instead of SSH
# --------------------------------------------------------------------------------------------


def test_the_plan_says_how_windows_and_esxi_hosts_are_stopped_and_restored() -> None:
    from orchestrator.model import Mode
    from orchestrator.planner import build_plan

    text = edit(ESX_VIA_VC, "      vm: EMR-DB1\n", "      vm: EMR-DB1\n    os: windows\n")
    inv = validate_text(text, FILE).inventory
    stop = {s.id: s for s in build_plan(inv, Mode.SHUTDOWN).steps()}
    db = stop["stop-host:emr-db1"]
    assert db.reason == "os: windows: stopped only through its power controller (no SSH or Ansible command)"
    assert db.verify == ("its power controller vc-antwerp says off and RDP, WinRM and SMB (3389, 5985, 5986, 445) "
                         "are silent on 10.10.2.11 and 10.99.2.11")
    esx = stop["stop-host:esx1"]
    assert esx.reason is not None and esx.reason.startswith(
        "ESXi host esx1.example.org: maintenance mode, then shutdown, through vc-antwerp (its BMC bmc-esx1 powers it "
        "off if vCenter cannot); hypervisor: runs VMs emr-app1, emr-db1")
    assert esx.verify.startswith("its BMC bmc-esx1 says off, and SSH, HTTPS and vpxa (22, 443, 902) are silent")
    assert stop["stop-host:emr-app1"].reason is None  # a linux VM: as before
    restore = {s.id: s for s in build_plan(inv, Mode.RESTORE).steps()}
    for host in ("emr-db1", "esx1"):
        integrity = restore[f"check-integrity:{host}"]
        assert integrity.reason == "integrity: attestation required (the collector is Linux-only)"
        assert integrity.verify.startswith("integrity: attestation required (the collector is Linux-only)")
    assert restore["check-integrity:emr-app1"].reason is None
    assert restore["start-host:esx1"].verify == ("vc-antwerp says esx1.example.org is connected, powered on and out "
                                                 "of maintenance mode")
    no_bmc = validate_text(edit(ESX_VIA_VC, "      bmc: bmc-esx1\n", ""), FILE).inventory
    reason = {s.id: s for s in build_plan(no_bmc, Mode.RESTORE).steps()}["start-host:esx1"].reason
    assert reason is not None and reason.startswith(
        "ESXi host esx1.example.org: no BMC in the inventory: power it on by its BMC console or at the server; the "
        "step waits for vc-antwerp to see it connected, then ends its maintenance mode")


def test_the_example_hospital_describes_its_vmware_estate() -> None:
    from pathlib import Path

    from orchestrator.inventory import load_inventory
    from orchestrator.model import ControllerType, HostKind

    inv = load_inventory(Path(__file__).parents[2] / "inventories" / "example-hospital.yml")
    vcenters = {c.name for c in inv.power_controllers.values() if c.type is ControllerType.VSPHERE}
    assert vcenters == {"vc-antwerp", "vc-deurne"}
    windows = [h for h in inv.hosts.values() if h.os is HostOs.WINDOWS]
    assert len(windows) >= 20 and all(h.power_target is not None for h in windows)
    assert {h.credentials for h in windows} == {"windows"}
    hypervisors = [h for h in inv.hosts.values() if h.kind is HostKind.HYPERVISOR]
    assert {h.campus for h in hypervisors} == {"antwerp", "deurne"}
    assert all(h.power_target is not None and h.power_target.host for h in hypervisors)
    assert any(h.kind is HostKind.STORAGE for h in inv.hosts.values())
    for vm in (h for h in windows if h.runs_on):
        assert vm.power_target is not None and vm.power_target.controller == f"vc-{vm.campus}"


def test_a_bmc_named_by_a_hypervisor_and_by_another_host_is_refused() -> None:
    text = edit(ESX_VIA_VC, "      controller: bmc-san1\n      system: \"1\"\n", "      controller: bmc-esx1\n")
    problem = the_problem(text, "hosts.esx1.power", line_of(text, "    power:", 2), "already powers host")
    assert "the BMC of controller 'bmc-esx1' already powers host 'san1'" in problem.message
