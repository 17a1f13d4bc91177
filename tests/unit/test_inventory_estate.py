"""The estate in the inventory: power controllers, structured power:, hypervisors and storage.

Each test starts from ESTATE (tests/data/estate.yml: valid, warning-free, one key per line so line
numbers are exact), makes one edit, and asserts the problem's key path and line, and that the rendered
error carries both and a fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import InventoryError, Problem
from orchestrator.inventory import validate_text
from orchestrator.model import ControllerType, HostKind, PowerTarget

FILE = "estate.yml"

ESTATE = (Path(__file__).parents[1] / "data" / "estate.yml").read_text(encoding="utf-8")


def edit(text: str, old: str, new: str, occurrence: int = 1) -> str:
    """Replace the ``occurrence``-th ``old`` with ``new``."""
    assert text.count(old) >= occurrence, f"{old!r} occurs {text.count(old)} times"
    head, *tails = text.split(old)
    return head + "".join((new if i == occurrence - 1 else old) + tail for i, tail in enumerate(tails))


def line_of(text: str, snippet: str, occurrence: int = 1) -> int:
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if snippet in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{snippet!r} not found")


def the_problem(text: str, key: str, line: int, *words: str, strict: bool = False) -> Problem:
    """Exactly one error at ``key``/``line`` whose message has ``words``, rendered with file:line and a fix."""
    with pytest.raises(InventoryError) as info:
        validate_text(text, FILE, strict=strict)
    errors = [p for p in info.value.problems if p.severity == "error"]
    matching = [p for p in errors if p.key == key and all(word in p.message for word in words)]
    assert len(matching) == 1, f"expected one error at {key}, got: {[p.render() for p in errors]}"
    problem = matching[0]
    assert (problem.file, problem.line) == (FILE, line), problem.render()
    assert problem.hint, "every problem says how to fix it"
    assert f"{FILE}:{line}: {key}: " in str(info.value)
    return problem


def warnings_of(text: str) -> list[Problem]:
    return list(validate_text(text, FILE).warnings)


# --------------------------------------------------------------------------------------------
# the estate is valid, and built as written
# --------------------------------------------------------------------------------------------


def test_estate_is_valid_and_warning_free() -> None:
    result = validate_text(ESTATE, FILE, base_dir="/site")
    assert result.warnings == ()
    inv = result.inventory
    vc = inv.power_controllers["vc-antwerp"]
    assert (vc.type, vc.address, vc.credentials, vc.verify_tls) == (ControllerType.VSPHERE, "vcenter.example.org",
                                                                    "vcenter", True)
    assert vc.ca_file == "/site/certs/vcenter-ca.pem"
    assert inv.credentials["bmc"].password_file == "/site/secrets/bmc-password"
    db = inv.hosts["emr-db1"]
    assert (db.kind, db.runs_on, db.stored_on) == (HostKind.SERVER, ("esx1",), ("san1",))
    assert db.power_target == PowerTarget("vc-antwerp", vm="EMR-DB1")
    assert db.power is None
    assert inv.hosts["emr-app1"].power_target == PowerTarget("vc-antwerp", vm="EMR APP (1)")
    assert inv.hosts["esx1"].kind is HostKind.HYPERVISOR
    assert inv.hosts["esx1"].power_target == PowerTarget("bmc-esx1")
    assert inv.hosts["san1"].power_target == PowerTarget("bmc-san1", system="1")
    assert inv.hosts["emr-app1"].needs == ("emr-db1", "esx1", "san1")


def test_short_power_forms_keep_working() -> None:
    text = edit(ESTATE, "    power:\n      controller: bmc-esx1\n", "    power: manual\n")
    host = validate_text(text, FILE).inventory.hosts["esx1"]
    assert (host.power, host.power_target) == ("manual", None)


def test_the_controller_maps_onto_the_drivers_power_controller() -> None:
    from orchestrator.drivers.power_controllers import controller_from_inventory
    from orchestrator.power_status import where

    inv = validate_text(ESTATE, FILE, base_dir="/site").inventory
    redfish = controller_from_inventory(inv.power_controllers["bmc-san1"], inv.credentials["bmc"])
    assert (redfish.type, redfish.endpoint, redfish.username) == ("redfish", "https://10.99.3.21:8443", "admin")
    assert (redfish.password_file, redfish.password_env) == ("/site/secrets/bmc-password", None)
    vsphere = controller_from_inventory(inv.power_controllers["vc-antwerp"], inv.credentials["vcenter"])
    assert (vsphere.endpoint, vsphere.password_env, vsphere.verify()) == (
        "https://vcenter.example.org:443", "VCENTER_PASSWORD", "/site/certs/vcenter-ca.pem")
    ipmi = controller_from_inventory(inv.power_controllers["bmc-esx1"], inv.credentials["bmc"])
    assert (ipmi.type, ipmi.address, ipmi.effective_port) == ("ipmi", "10.99.3.31", 623)
    assert where(ipmi) == "10.99.3.31:623"


def test_a_port_key_sets_the_port() -> None:
    from orchestrator.drivers.power_controllers import controller_from_inventory

    text = edit(ESTATE, "    address: 10.99.3.31\n", "    address: 10.99.3.31\n    port: 6230\n")
    inv = validate_text(text, FILE).inventory
    assert controller_from_inventory(inv.power_controllers["bmc-esx1"], inv.credentials["bmc"]).port == 6230


# --------------------------------------------------------------------------------------------
# power: structured
# --------------------------------------------------------------------------------------------


def test_unknown_controller() -> None:
    text = edit(ESTATE, "controller: vc-antwerp", "controller: vc-deurne")
    problem = the_problem(text, "hosts.emr-db1.power.controller", line_of(text, "controller: vc-deurne"),
                          "unknown power controller 'vc-deurne'")
    assert "bmc-esx1, bmc-san1, vc-antwerp" in problem.hint


def test_a_vm_on_an_ipmi_controller() -> None:
    text = edit(ESTATE, "      controller: bmc-esx1\n", "      controller: bmc-esx1\n      vm: ESX1\n")
    problem = the_problem(text, "hosts.esx1.power.vm", line_of(text, "vm: ESX1"), "'vm' does not fit", "ipmi")
    assert "{controller: NAME}" in problem.hint


def test_a_system_on_a_vsphere_controller() -> None:
    text = edit(ESTATE, "      vm: EMR-DB1\n", "      vm: EMR-DB1\n      system: '1'\n")
    the_problem(text, "hosts.emr-db1.power.system", line_of(text, "system: '1'"), "'system' does not fit", "vsphere")


def test_a_vm_on_a_redfish_controller() -> None:
    text = edit(ESTATE, '      system: "1"\n', "      vm: SAN1\n")
    the_problem(text, "hosts.san1.power.vm", line_of(text, "vm: SAN1"), "'vm' does not fit", "redfish")


def test_a_vsphere_controller_needs_a_vm() -> None:
    text = edit(ESTATE, "      vm: EMR-DB1\n", "")
    the_problem(text, "hosts.emr-db1.power", line_of(text, "power:", 3), "which VM")


@pytest.mark.parametrize("vm", ['"EMR\\tDB1"', "' EMR-DB1'", "'" + "x" * 81 + "'", "''"])
def test_vm_names_are_checked(vm: str) -> None:
    text = edit(ESTATE, "vm: EMR-DB1", f"vm: {vm}")
    with pytest.raises(InventoryError) as info:
        validate_text(text, FILE)
    keys = [(p.key, p.line) for p in info.value.problems]
    assert ("hosts.emr-db1.power.vm", line_of(text, "vm: ")) in keys, keys


@pytest.mark.parametrize("system", ["'1 2'", "'../Managers/1'", "'$(reboot)'"])
def test_system_ids_are_checked(system: str) -> None:
    text = edit(ESTATE, 'system: "1"', f"system: {system}")
    problem = the_problem(text, "hosts.san1.power.system", line_of(text, "system: "), "does not match")
    assert "Systems member id" in problem.hint


def test_an_unknown_key_in_power_lists_the_allowed_ones() -> None:
    text = edit(ESTATE, "      vm: EMR-DB1\n", "      vm: EMR-DB1\n      password: x\n")
    problem = the_problem(text, "hosts.emr-db1.power.password", line_of(text, "password: x"), "unknown key")
    assert "password_env" in problem.hint  # the secrets hint, not a list of keys


def test_an_unknown_short_form() -> None:
    text = edit(ESTATE, "    power:\n      controller: bmc-esx1\n", "    power: idrac\n")
    problem = the_problem(text, "hosts.esx1.power", line_of(text, "power: idrac"), "not one of the allowed values")
    assert "manual" in problem.hint


# --------------------------------------------------------------------------------------------
# power_controllers
# --------------------------------------------------------------------------------------------


def test_a_controller_credential_without_a_password() -> None:
    text = edit(ESTATE, "    credentials: vcenter\n", "    credentials: lab\n")
    the_problem(text, "power_controllers.vc-antwerp.credentials", line_of(text, "credentials: lab", 2),
                "no password reference")


def test_a_controller_with_an_unknown_credential() -> None:
    text = edit(ESTATE, "    credentials: vcenter\n", "    credentials: vcentre\n")
    the_problem(text, "power_controllers.vc-antwerp.credentials", line_of(text, "credentials: vcentre"),
                "unknown credential 'vcentre'")


def test_plain_http_is_refused_without_allow_http() -> None:
    text = edit(ESTATE, "address: https://10.99.3.21:8443", "address: http://10.99.3.21:8000")
    the_problem(text, "power_controllers.bmc-san1.address", line_of(text, "http://10.99.3.21"), "in clear")


def test_allow_http_is_a_warning_and_an_error_when_strict() -> None:
    text = edit(ESTATE, "    address: https://10.99.3.21:8443\n",
                "    address: http://127.0.0.1:8000\n    allow_http: true\n")
    warned = warnings_of(text)
    assert [(w.key, w.line) for w in warned] == [("power_controllers.bmc-san1.allow_http",
                                                  line_of(text, "allow_http: true"))]
    the_problem(text, "power_controllers.bmc-san1.allow_http", line_of(text, "allow_http"), "in clear", strict=True)


def test_verify_tls_off_is_a_warning_and_an_error_when_strict() -> None:
    text = edit(ESTATE, "    ca_file: certs/vcenter-ca.pem\n", "    verify_tls: false\n")
    warned = warnings_of(text)
    assert [(w.key, w.line) for w in warned] == [("power_controllers.vc-antwerp.verify_tls",
                                                  line_of(text, "verify_tls"))]
    the_problem(text, "power_controllers.vc-antwerp.verify_tls", line_of(text, "verify_tls"), "TLS verification is off",
                strict=True)


def test_an_ipmi_address_has_no_scheme() -> None:
    text = edit(ESTATE, "address: 10.99.3.31", "address: https://10.99.3.31")
    the_problem(text, "power_controllers.bmc-esx1.address", line_of(text, "https://10.99.3.31"), "no scheme")


def test_a_port_given_twice_differently() -> None:
    text = edit(ESTATE, "    address: https://10.99.3.21:8443\n",
                "    address: https://10.99.3.21:8443\n    port: 443\n")
    the_problem(text, "power_controllers.bmc-san1.port", line_of(text, "port: 443"), "differs")


@pytest.mark.parametrize("address", ["'vc antwerp'", "https://vc/sdk", "ftp://vc", "'vc:99999'", "'[::1'",
                                     "https://admin:secret@vc", "vc_1", "'vc:0'"])
def test_bad_controller_addresses(address: str) -> None:
    text = edit(ESTATE, "address: vcenter.example.org", f"address: {address}")
    with pytest.raises(InventoryError) as info:
        validate_text(text, FILE)
    keys = [(p.key, p.line) for p in info.value.problems]
    assert ("power_controllers.vc-antwerp.address", line_of(text, "address: " + address[:2])) in keys, keys
    assert "secret" not in str(info.value)


def test_an_unknown_controller_type() -> None:
    text = edit(ESTATE, "type: vsphere", "type: hyperv")
    the_problem(text, "power_controllers.vc-antwerp.type", line_of(text, "type: hyperv"), "not one of the allowed")


def test_a_password_file_alone_does_not_serve_ssh() -> None:
    text = edit(ESTATE, "    credentials: lab\n", "    credentials: bmc\n", occurrence=2)  # host san1
    the_problem(text, "hosts.san1.credentials", line_of(text, "credentials: bmc", 3), "only a password_file")


def test_a_password_file_path_is_checked() -> None:
    text = edit(ESTATE, "password_file: secrets/bmc-password", "password_file: '-oProxyCommand=x'")
    the_problem(text, "credentials.bmc.password_file", line_of(text, "password_file"), "starts with '-'")


# --------------------------------------------------------------------------------------------
# kind, runs_on, stored_on
# --------------------------------------------------------------------------------------------


def test_runs_on_a_missing_host() -> None:
    text = edit(ESTATE, "runs_on: esx1", "runs_on: esx9")
    the_problem(text, "hosts.emr-db1.runs_on", line_of(text, "runs_on: esx9"), "unknown host 'esx9'")


def test_runs_on_a_host_that_is_no_hypervisor() -> None:
    text = edit(ESTATE, "runs_on: [esx1]", "runs_on: [san1]")
    problem = the_problem(text, "hosts.emr-app1.runs_on[0]", line_of(text, "runs_on: [san1]"),
                          "'san1' is a storage host, not a hypervisor")
    assert "kind: hypervisor" in problem.hint


def test_stored_on_a_missing_host() -> None:
    text = edit(ESTATE, "stored_on: [san1]", "stored_on: [san2]")
    the_problem(text, "hosts.emr-db1.stored_on[0]", line_of(text, "stored_on: [san2]"), "unknown host 'san2'")


def test_stored_on_a_host_that_is_no_storage() -> None:
    text = edit(ESTATE, "stored_on: san1", "stored_on: emr-db1")
    the_problem(text, "hosts.emr-app1.stored_on", line_of(text, "stored_on: emr-db1"),
                "'emr-db1' is a server host, not a storage")


def test_runs_on_itself() -> None:
    text = edit(ESTATE, "    kind: hypervisor\n", "    kind: hypervisor\n    runs_on: esx1\n")
    the_problem(text, "hosts.esx1.runs_on", line_of(text, "runs_on: esx1", 1), "runs on itself")


def test_an_unknown_kind() -> None:
    text = edit(ESTATE, "kind: storage", "kind: san")
    the_problem(text, "hosts.san1.kind", line_of(text, "kind: san"), "not one of the allowed values")


def test_a_cycle_through_runs_on_and_depends_on() -> None:
    text = edit(ESTATE, "    kind: hypervisor\n", "    kind: hypervisor\n    depends_on: [emr-app1]\n    tier: 2\n")
    text = edit(text, "    tier: 1\n", "    tier: 2\n")
    problem = the_problem(text, "hosts.emr-app1.depends_on", line_of(text, "depends_on: [emr-db1]"),
                          "dependency cycle between hosts emr-app1, emr-db1, esx1", "runs_on")
    assert "break the cycle" in problem.hint


def test_a_cycle_through_stored_on() -> None:
    text = edit(ESTATE, "    kind: storage\n", "    kind: storage\n    depends_on: [emr-db1]\n    tier: 1\n")
    the_problem(text, "hosts.emr-db1.stored_on", line_of(text, "stored_on: [san1]"),
                "dependency cycle between hosts emr-db1, san1")


def test_a_vm_of_a_lower_tier_than_its_hypervisor() -> None:
    text = edit(ESTATE, "    kind: hypervisor\n", "    kind: hypervisor\n    tier: 2\n")
    the_problem(text, "hosts.emr-db1.tier", line_of(text, "tier: 1"), "lower than tier 2 of 'esx1'")


# --------------------------------------------------------------------------------------------
# kept hosts: a kept VM keeps its hypervisor and storage running
# --------------------------------------------------------------------------------------------


def test_a_kept_vm_on_a_hypervisor_that_is_not_kept_is_a_warning_naming_both() -> None:
    text = edit(ESTATE, "    tier: 2\n", "    tier: 2\n    keep_running: true\n")  # emr-app1
    warned = [(w.key, w.line, w.message) for w in warnings_of(text)]
    keys = {(k, line) for k, line, _ in warned}
    assert ("hosts.emr-app1.runs_on[0]", line_of(text, "runs_on: [esx1]")) in keys, warned
    assert ("hosts.emr-app1.stored_on", line_of(text, "stored_on: san1")) in keys, warned
    assert any("'emr-app1'" in m and "'esx1'" in m for _, _, m in warned)
    the_problem(text, "hosts.emr-app1.runs_on[0]", line_of(text, "runs_on: [esx1]"), "'emr-app1'", "'esx1'",
                strict=True)
    stopped_beside = [w for w in warnings_of(text) if "keeps running" in w.message]
    assert [(w.key, w.line) for w in stopped_beside] == [("hosts.emr-db1.runs_on", line_of(text, "runs_on: esx1"))]
    assert "'emr-db1' will be stopped while its hypervisor 'esx1' keeps running" in stopped_beside[0].message
    kept = validate_text(text, FILE).inventory.keep_reasons()
    assert kept["esx1"] == "runs kept host emr-app1"
    assert kept["san1"] == "stores kept host emr-app1"


def test_a_vm_stopped_on_a_kept_hypervisor_is_a_warning_naming_both() -> None:
    text = edit(ESTATE, "    kind: hypervisor\n", "    kind: hypervisor\n    keep_running: true\n")
    warned = [w for w in warnings_of(text) if "keeps running" in w.message]
    assert {(w.key, w.line) for w in warned} == {("hosts.emr-db1.runs_on", line_of(text, "runs_on: esx1")),
                                                 ("hosts.emr-app1.runs_on[0]", line_of(text, "runs_on: [esx1]"))}
    assert all("esx1" in w.message for w in warned)
    the_problem(text, "hosts.emr-db1.runs_on", line_of(text, "runs_on: esx1"), "'emr-db1'", "'esx1'", strict=True)


def test_every_problem_at_once() -> None:
    text = edit(ESTATE, "controller: vc-antwerp", "controller: vc-deurne")
    text = edit(text, "runs_on: [esx1]", "runs_on: [san1]")
    text = edit(text, "stored_on: [san1]", "stored_on: [nas9]")
    with pytest.raises(InventoryError) as info:
        validate_text(text, FILE)
    keys = {p.key for p in info.value.problems if p.severity == "error"}
    assert {"hosts.emr-db1.power.controller", "hosts.emr-app1.runs_on[0]", "hosts.emr-db1.stored_on[0]"} <= keys


def test_the_schema_describes_the_new_forms(tmp_path: Path) -> None:
    import jsonschema
    import yaml

    from orchestrator.inventory import inventory_schema

    schema = inventory_schema()
    assert "power_controllers" in schema["properties"]
    jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(ESTATE))


def test_the_ansible_export_carries_kind_and_placement_for_the_manual_fallback() -> None:
    from orchestrator.drivers.ansible_inventory import to_ansible_inventory

    hosts = to_ansible_inventory(validate_text(ESTATE, FILE).inventory)["all"]["hosts"]
    assert (hosts["emr-db1"]["orchestrator_runs_on"], hosts["emr-db1"]["orchestrator_stored_on"]) == (["esx1"],
                                                                                                      ["san1"])
    assert hosts["esx1"]["orchestrator_kind"] == "hypervisor" and "orchestrator_runs_on" not in hosts["esx1"]
    assert hosts["san1"]["orchestrator_kind"] == "storage"
    assert "orchestrator_kind" not in hosts["emr-db1"]  # a server, as every host before this format


def test_two_hosts_on_one_bmc() -> None:
    text = edit(ESTATE, "      controller: bmc-san1\n      system: \"1\"\n", "      controller: bmc-esx1\n")
    the_problem(text, "hosts.esx1.power", line_of(text, "power:", 2), "the BMC of controller 'bmc-esx1' already "
                "powers host 'san1'")


def test_two_hosts_on_one_vm() -> None:
    text = edit(ESTATE, "vm: EMR APP (1)", "vm: EMR-DB1")
    the_problem(text, "hosts.emr-app1.power", line_of(text, "power:", 4), "'EMR-DB1'", "already powers host 'emr-db1'")
