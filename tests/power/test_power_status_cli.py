"""`orchestrator power status` end to end: an inventory whose controllers are a running vcsim (vSphere,
over TLS verified against the test CA), sushy-emulator (Redfish) and virtualbmc (IPMI), read through
the real console script, judged by asking each emulator independently (the test's own pyvmomi session,
its own HTTPS GET, libvirt's own view of the BMC's domain)."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from cli_helpers import orch
from power_emulators import PASSWORD, USER, Endpoint, IpmiBmc, Tls, power_of, vm_of

ESTATE = {
    "hosts": ["esx1", "esx2"],
    "datastores": ["san1-ds"],
    "vms": [
        {"name": "EMR-DB1", "host": "esx1", "tools": True},
        {"name": "win app1", "host": "esx1", "tools": False},
        {"name": "pacs1", "host": "esx2", "tools": True},
        {"name": "spare1", "host": "esx2", "tools": True, "powered_on": False},
    ],
}
WRONG = "wrong-Pw-3k"

INVENTORY = """\
version: 1
site:
  name: power-test
management:
  segment: mgmt
campuses:
  antwerp: {{}}
segments:
  mgmt:
    subnet: 127.99.0.0/16
    zone: management
  servers:
    campus: antwerp
    subnet: 127.10.2.0/24
    zone: servers
    gateway: core
devices:
  core:
    campus: antwerp
    platform: linux
    address: 127.99.0.2
    role: core
    credentials: ssh
power_controllers:
  vc-test:
    type: vsphere
    address: https://{vc_host}:{vc_port}
    credentials: {vc_credential}
    ca_file: {ca_file}
  bmc-san1:
    type: redfish
    address: https://{rf_host}:{rf_port}
    credentials: power
    ca_file: {ca_file}
  bmc-esx1:
    type: ipmi
    address: {ipmi_host}:{ipmi_port}
    credentials: power
hosts:
  san1:
    segment: servers
    address: 127.10.2.21
    management_address: 127.99.2.21
    kind: storage
    power: {{controller: bmc-san1, system: "{system}"}}
    credentials: ssh
  esx1:
    segment: servers
    address: 127.10.2.31
    management_address: 127.99.2.31
    kind: hypervisor
    power: {{controller: bmc-esx1}}
    stored_on: san1
    credentials: ssh
  emr-db1:
    segment: servers
    address: 127.10.2.11
    management_address: 127.99.2.11
    power: {{controller: vc-test, vm: EMR-DB1}}
    runs_on: esx1
    stored_on: san1
    credentials: ssh
  win-app1:
    segment: servers
    address: 127.10.2.12
    management_address: 127.99.2.12
    power: {{controller: vc-test, vm: win app1}}
    runs_on: esx1
    credentials: ssh
  pacs1:
    segment: servers
    address: 127.10.2.13
    management_address: 127.99.2.13
    power: {{controller: vc-test, vm: {pacs_moref}}}
    credentials: ssh
  spare1:
    segment: servers
    address: 127.10.2.14
    management_address: 127.99.2.14
    power: {{controller: vc-test, vm: spare1}}
    credentials: ssh
  plain1:
    segment: servers
    address: 127.10.2.15
    management_address: 127.99.2.15
    credentials: ssh
credentials:
  ssh:
    username: root
    key_file: keys/none
  power:
    username: {user}
    password_env: POWER_TEST_PASSWORD
  wrong:
    username: {user}
    password_env: POWER_TEST_WRONG_PASSWORD
"""

MANAGEMENT = {"san1": "127.99.2.21", "esx1": "127.99.2.31", "emr-db1": "127.99.2.11", "win-app1": "127.99.2.12",
              "pacs1": "127.99.2.13", "spare1": "127.99.2.14"}
VMS = {"emr-db1": "EMR-DB1", "win-app1": "win app1", "pacs1": "pacs1", "spare1": "spare1"}


def vm_power(si: Any, name: str) -> str:
    return "off" if power_of(si, name) == "poweredOff" else "on"


def moref_of(si: Any, name: str) -> str:
    return str(vm_of(si, name)._moId)


def redfish_system(ep: Endpoint, tls: Tls) -> tuple[str, str]:
    """The BMC's one system: its member id and its PowerState as the test reads it over HTTPS."""
    base = f"https://{ep.host}:{ep.port}"
    auth = (USER.encode(), PASSWORD.encode())
    members = requests.get(f"{base}/redfish/v1/Systems", auth=auth, verify=str(tls.ca_file), timeout=10).json()
    uri = members["Members"][0]["@odata.id"]
    system = requests.get(base + uri, auth=auth, verify=str(tls.ca_file), timeout=10).json()
    return uri.rstrip("/").rsplit("/", 1)[-1], "off" if system["PowerState"] == "Off" else "on"


def ssh_answers(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=1.0):
            return True
    except OSError:
        return False


def write_inventory(tmp_path: Path, vc: Endpoint, rf: Endpoint, bmc: IpmiBmc, tls: Tls, system: str, moref: str,
                    vc_credential: str = "power") -> Path:
    path = tmp_path / f"site-{vc_credential}.yml"
    path.write_text(INVENTORY.format(
        vc_host=vc.host, vc_port=vc.port, vc_credential=vc_credential, ca_file=tls.ca_file, rf_host=rf.host,
        rf_port=rf.port, ipmi_host=bmc.endpoint.host, ipmi_port=bmc.endpoint.port, system=system,
        pacs_moref=moref, user=USER), encoding="utf-8")
    path.chmod(0o600)
    return path


def test_power_status_reports_what_each_emulator_says(vcsim: Callable[..., Endpoint],
                                                      vsphere_judge: Callable[[Endpoint], Any], tls: Tls,
                                                      redfish_bmc: Endpoint, ipmi_bmc: IpmiBmc,
                                                      tmp_path: Path) -> None:
    vc = vcsim(ESTATE, use_tls=True)
    judge = vsphere_judge(vc)
    system, redfish_state = redfish_system(redfish_bmc, tls)
    inventory = write_inventory(tmp_path, vc, redfish_bmc, ipmi_bmc, tls, system, moref_of(judge, "pacs1"))

    done = orch(None, "power", "status", inventory, "--json", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    hosts = {h["name"]: h for h in report["hosts"]}
    assert set(hosts) == {"san1", "esx1", *VMS}  # plain1 has no controller
    for host, vm in VMS.items():
        assert (hosts[host]["controller"], hosts[host]["state"]) == ("vc-test", vm_power(judge, vm)), hosts[host]
    assert hosts["spare1"]["state"] == "off" and hosts["emr-db1"]["state"] == "on"
    assert hosts["pacs1"]["target"].startswith("vm-")
    assert hosts["san1"]["state"] == redfish_state == redfish_system(redfish_bmc, tls)[1]
    libvirt = ipmi_bmc.libvirt_state()
    assert hosts["esx1"]["state"] == {"running": "on", "shutoff": "off"}[libvirt]
    for h in hosts.values():  # the host's own probe: its SSH port, as the test finds it independently
        assert h["probe"] == ("answers" if ssh_answers(MANAGEMENT[h["name"]]) else "silent")
        assert h["mismatch"] == ((h["state"] == "on") != (h["probe"] == "answers"))
        assert h["error"] is None
    assert all(c["ok"] for c in report["controllers"])
    assert vm_power(judge, "EMR-DB1") == "on" and vm_power(judge, "spare1") == "off"  # read-only: nothing changed

    table = orch(None, "power", "status", inventory, "--host", "spare1", "--host", "san1", "--no-probe", timeout=120)
    assert table.returncode == 0, table.stdout + table.stderr
    assert "spare1" in table.stdout and "san1" in table.stdout and "emr-db1" not in table.stdout
    assert "powered off" in table.stdout  # spare1's evidence


def test_wrong_credentials_are_a_clear_failure_without_the_password(vcsim: Callable[..., Endpoint],
                                                                     vsphere_judge: Callable[[Endpoint], Any],
                                                                     tls: Tls, redfish_bmc: Endpoint,
                                                                     ipmi_bmc: IpmiBmc, tmp_path: Path) -> None:
    vc = vcsim(ESTATE, use_tls=True)
    judge = vsphere_judge(vc)
    system, _ = redfish_system(redfish_bmc, tls)
    inventory = write_inventory(tmp_path, vc, redfish_bmc, ipmi_bmc, tls, system, moref_of(judge, "pacs1"),
                                vc_credential="wrong")
    env = {"POWER_TEST_WRONG_PASSWORD": WRONG}

    done = orch(None, "power", "status", inventory, "--json", "--no-probe", env=env, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads(done.stdout)
    vms = [h for h in report["hosts"] if h["controller"] == "vc-test"]
    assert len(vms) == 4 and all(h["state"] == "unknown" and h["error"] for h in vms)  # never "off"
    failed = [c for c in report["controllers"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["vc-test"]
    assert "login" in failed[0]["error"].lower() or "auth" in failed[0]["error"].lower(), failed[0]
    assert {h["name"]: h["state"] for h in report["hosts"] if h["controller"] != "vc-test"}.keys() == {"san1", "esx1"}
    assert all(h["state"] != "unknown" for h in report["hosts"] if h["controller"] != "vc-test")

    human = orch(None, "power", "status", inventory, "--no-probe", env=env, timeout=120)
    assert human.returncode == 1
    assert "controller failed" in human.stdout and "vc-test" in human.stdout
    for output in (done.stdout, done.stderr, human.stdout, human.stderr):
        assert WRONG not in output and PASSWORD not in output


def test_an_unset_password_variable_is_named(vcsim: Callable[..., Endpoint], vsphere_judge: Callable[[Endpoint], Any],
                                             tls: Tls, redfish_bmc: Endpoint, ipmi_bmc: IpmiBmc,
                                             tmp_path: Path) -> None:
    vc = vcsim(ESTATE, use_tls=True)
    judge = vsphere_judge(vc)
    system, _ = redfish_system(redfish_bmc, tls)
    inventory = write_inventory(tmp_path, vc, redfish_bmc, ipmi_bmc, tls, system, moref_of(judge, "pacs1"),
                                vc_credential="wrong")
    done = orch(None, "power", "status", inventory, "--json", "--no-probe", "--host", "emr-db1", timeout=120)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert "POWER_TEST_WRONG_PASSWORD" in report["controllers"][0]["error"]
    assert report["hosts"][0]["state"] == "unknown"
