"""``orchestrator inventory import vsphere`` and ``inventory diff --against vsphere`` against vcsim
(govmomi's vCenter simulator) holding a generated estate of 210 VMs on 4 hypervisors, over TLS
checked against the test CA. Judged from the files the commands write and the exit codes of
``orchestrator validate`` and ``orchestrator plan`` (real subprocesses of the console script)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from power_emulators import REPO, Endpoint, Tls
from ruamel.yaml import YAML

CLI = str(REPO / ".venv" / "bin" / "orchestrator")
VMS = 210
NO_IP = {"ANT-APP-017", "DEU-APP-033"}  # Tools report no address
STRAY = "ANT-APP-052"  # an address in no segment of the inventory
UNKNOWN_OS = {"ANT-APP-061", "DEU-APP-072"}  # otherGuest64, Tools silent

SKELETON = """\
# A hospital's hand-written skeleton: the import fills in the hosts.
version: 1
site: {name: import-hospital, timezone: Europe/Brussels}
management: {segment: mgmt}
campuses:
  antwerp: {description: main campus}
  deurne: {description: second campus}
segments:
  mgmt:         {subnet: 10.99.0.0/16, zone: management}
  ant-servers:  {campus: antwerp, subnet: 10.10.2.0/24, zone: servers, gateway: ant-core}
  ant-clinical: {campus: antwerp, subnet: 10.10.3.0/24, zone: clinical, gateway: ant-core}
  ant-infra:    {campus: antwerp, subnet: 10.10.9.0/24, zone: servers, gateway: ant-core}
  deu-servers:  {campus: deurne, subnet: 10.20.2.0/24, zone: servers, gateway: deu-core}
devices:
  ant-core: {campus: antwerp, platform: cisco_ios, address: 10.99.1.1, role: core, credentials: ops}
  deu-core: {campus: deurne, platform: cisco_ios, address: 10.99.1.2, role: core, credentials: ops}
hosts:
  # the identity server: not a VM, written by hand
  ad1: {campus: antwerp, segment: ant-servers, address: 10.10.2.250, role: identity, credentials: ops}
  # the EMR database: its dependency and tier are hand-written and must survive an import
  ant-db-000: {campus: antwerp, segment: ant-servers, address: 10.10.2.100, tier: 1, depends_on: [ad1],
               credentials: ops}
  san1: {kind: storage, campus: antwerp, segment: ant-infra, address: 10.10.9.200, credentials: ops}
islands:
  # the ED keeps running
  clinical: {segments: [ant-clinical], reason: the ED keeps operating}
credentials:
  ops: {username: root, key_file: KEY, known_hosts: KNOWN}
  vcenter: {username: orchestrator, password_env: POWER_TEST_PASSWORD}
"""

MAPPING = """\
defaults: {credentials: ops}
folders:
  Antwerp: {campus: antwerp}
  Deurne: {campus: deurne}
  Antwerp/Clinical: {role: clinical-app}
attributes: {Role: role, Tier: tier}
datastores: {san1-ds: san1, san2-ds: san2}
"""


def estate() -> dict[str, Any]:
    vms: list[dict[str, Any]] = []
    for i in range(VMS):
        campus = "ANT" if i % 3 else "DEU"
        kind = "DB" if i % 10 == 0 else "APP"
        name = f"{campus}-{kind}-{i:03d}"
        windows = i % 5 == 4
        vm: dict[str, Any] = {
            "name": name, "host": f"esx{i % 4 + 1}", "tools": True, "datastore": "san2-ds" if i % 7 == 0 else "san1-ds",
            "guest_id": "windows2019srv_64Guest" if windows else "rhel8_64Guest",
            "guest_family": "windowsGuest" if windows else "linuxGuest",
        }
        if campus == "ANT":
            clinical = i % 2 == 0
            vm["folder"] = "Antwerp/Clinical" if clinical else "Antwerp/Servers"
            vm["ips"] = [f"10.10.{3 if clinical else 2}.{i % 250 + 1}"]
        else:
            vm["folder"] = "Deurne"
            vm["ips"] = [f"10.20.2.{i % 250 + 1}", f"10.99.20.{i % 250 + 1}"]  # and one on management
        if kind == "DB":
            vm["attributes"] = {"Role": "EMR-Database", "Tier": "1"}
        vms.append(vm)
    by_name = {v["name"]: v for v in vms}
    for name in NO_IP:
        by_name[name]["ips"] = []
    by_name[STRAY]["ips"] = ["172.16.5.5"]
    for name in UNKNOWN_OS:
        by_name[name].update(guest_id="otherGuest64", guest_family="")
    # the hand-written ant-db-000 is VM DEU... no: make VM 0 the Antwerp database the skeleton knows
    by_name["DEU-DB-000"].update(name="ANT-DB-000", folder="Antwerp/Servers", ips=["10.10.2.100"])
    return {"hosts": ["esx1", "esx2", "esx3", "esx4"], "datastores": ["san1-ds", "san2-ds"],
            "host_addresses": {f"esx{n}": f"10.10.9.{10 + n}" for n in range(1, 5)}, "vms": vms}


def orch(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**os.environ, "COLUMNS": "200"}, timeout=300, check=False, cwd=REPO)


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    key, known = tmp_path / "id_ed25519", tmp_path / "known_hosts"
    key.write_text("not used: nothing logs in to a host here\n")
    known.write_text("")
    skeleton = tmp_path / "hospital.yml"
    skeleton.write_text(SKELETON.replace("KEY", str(key)).replace("KNOWN", str(known)))
    mapping = tmp_path / "mapping.yml"
    mapping.write_text(MAPPING)
    return {"skeleton": skeleton, "mapping": mapping, "draft": tmp_path / "draft.yml"}


def fill_todos(text: str) -> tuple[str, list[str]]:
    """What the hospital's engineer does: every commented TODO(import) entry filled and uncommented."""
    yaml = YAML(typ="safe")
    out: list[str] = []
    filled: list[str] = []
    lines = text.splitlines()
    spare = iter(range(230, 250))
    i = 0
    while i < len(lines):
        if lines[i].lstrip().startswith("# TODO(import)"):
            entry = lines[i + 1].replace("  # ", "", 1)
            (name, fields), = yaml.load(entry).items()
            if fields.get("address") == "TODO":
                deurne = fields.get("campus") == "deurne"
                fields["address"] = f"10.{20 if deurne else 10}.2.{next(spare)}"
                fields["segment"] = "deu-servers" if deurne else "ant-servers"
            if fields.get("os") == "TODO":
                fields["os"] = "linux"
            assert "TODO" not in json.dumps(fields), fields
            out.append(f"  {name}: {json.dumps(fields)}")
            filled.append(name)
            i += 2
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out) + "\n", filled


def test_import_a_populated_estate_then_validate_and_plan(vcsim: Callable[..., Endpoint], tls: Tls,
                                                           site: dict[str, Path]) -> None:
    ep = vcsim(estate(), use_tls=True)
    done = orch("inventory", "import", "vsphere", "--controller", f"https://{ep.host}:{ep.port}",
                "--credentials", "vcenter", "--into", site["skeleton"], "--map", site["mapping"],
                "--ca-file", tls.ca_file, "-o", site["draft"], "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert stat.S_IMODE(site["draft"].stat().st_mode) == 0o600
    undecided = {u["host"]: " ".join(u["todo"]) for u in summary["undecided"]}
    # what it could not decide is listed, each with why (never guessed)
    assert set(undecided) == {"ant-app-017", "deu-app-033", "ant-app-052", "ant-app-061", "deu-app-072", "san2"}
    assert "no IPv4 address" in undecided["ant-app-017"]
    assert "172.16.5.5 in no segment" in undecided["ant-app-052"]
    assert "unknown guest OS" in undecided["deu-app-072"]
    assert "datastore 'san2-ds'" in undecided["san2"]
    assert summary["updated"]["ant-db-000"]  # the hand-written host, found in vCenter by its name
    assert len(summary["added"]) == VMS - 1 - 5 + 4  # the VMs and hypervisors decided, not the hand-written one

    text = site["draft"].read_text()
    assert "the EMR database: its dependency and tier are hand-written" in text  # comments kept
    assert "# the ED keeps running" in text
    assert text.count("# TODO(import)") == 6
    doc = YAML(typ="safe").load(text)
    db = doc["hosts"]["ant-db-000"]
    assert db["depends_on"] == ["ad1"] and db["tier"] == 1  # hand-written, kept
    assert db["power"] == {"controller": "vcenter", "vm": "ANT-DB-000"} and db["runs_on"] == ["esx1"]
    assert db["os"] == "linux" and db["stored_on"] == ["san2"]
    win = doc["hosts"]["ant-app-004"]  # i=4: windows, Antwerp/Clinical
    assert win == {"campus": "antwerp", "segment": "ant-clinical", "address": "10.10.3.5", "role": "clinical-app",
                   "os": "windows", "power": {"controller": "vcenter", "vm": "ANT-APP-004"}, "runs_on": ["esx1"],
                   "stored_on": ["san1"], "credentials": "ops"}
    deu = doc["hosts"]["deu-db-030"]  # Deurne: a management address too; role and tier from custom attributes
    assert deu["management_address"] == "10.99.20.31" and deu["address"] == "10.20.2.31"
    assert deu["role"] == "emr-database" and deu["tier"] == 1 and deu["campus"] == "deurne"
    assert doc["hosts"]["esx2"]["kind"] == "hypervisor" and doc["hosts"]["esx2"]["address"] == "10.10.9.12"
    assert doc["power_controllers"]["vcenter"]["ca_file"] == str(tls.ca_file)

    # as drafted, validation names what is still open (san2 is only a TODO)
    assert orch("validate", site["draft"]).returncode == 2
    filled_text, filled = fill_todos(text)
    assert len(filled) == 6
    site["draft"].write_text(filled_text)
    valid = orch("validate", site["draft"], "--json")
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert json.loads(valid.stdout)["counts"]["hosts"] == VMS + 4 + 2 + 1  # VMs, hypervisors, san1/san2, ad1
    planned = orch("plan", site["draft"], "--mode", "shutdown", "--json")
    assert planned.returncode == 0, planned.stderr
    steps = [s for w in json.loads(planned.stdout)["waves"] for s in w["steps"]]
    stopped = {s["target"] for s in steps if s["action"] == "stop-host"}
    assert "ant-app-052" in stopped and "deu-app-033" in stopped  # the filled-in TODOs are part of the plan
    assert "ant-app-004" not in stopped  # on the clinical island: kept running

    # a second import into the finished inventory changes nothing and keeps the filled entries
    again = orch("inventory", "import", "vsphere", "--controller", f"https://{ep.host}:{ep.port}",
                 "--credentials", "vcenter", "--into", site["draft"], "--map", site["mapping"],
                 "--ca-file", tls.ca_file, "-o", site["draft"], "--json")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["added"] == [] and second["gone"] == []
    assert "# TODO(import)" not in site["draft"].read_text()  # filled in: listed as undecided, not written twice
    assert orch("validate", site["draft"]).returncode == 0


def test_tls_is_verified_by_default(vcsim: Callable[..., Endpoint], site: dict[str, Path]) -> None:
    ep = vcsim({"hosts": ["esx1"], "vms": [{"name": "a", "host": "esx1"}]}, use_tls=True)
    done = orch("inventory", "import", "vsphere", "--controller", f"https://{ep.host}:{ep.port}",
                "--credentials", "vcenter", "--into", site["skeleton"], "-o", site["draft"])
    assert done.returncode != 0
    assert "certificate not trusted" in done.stderr
    assert not site["draft"].exists()  # nothing written


def test_diff_names_a_vm_added_in_vcenter(vcsim: Callable[..., Endpoint], tls: Tls, site: dict[str, Path],
                                          vsphere_judge: Callable[[Endpoint], Any]) -> None:
    ep = vcsim(estate(), use_tls=True)
    done = orch("inventory", "import", "vsphere", "--controller", f"https://{ep.host}:{ep.port}",
                "--credentials", "vcenter", "--into", site["skeleton"], "--map", site["mapping"],
                "--ca-file", tls.ca_file, "-o", site["draft"])
    assert done.returncode == 0, done.stderr
    site["draft"].write_text(fill_todos(site["draft"].read_text())[0])
    clean = orch("inventory", "diff", site["draft"], "--against", "vsphere", "--map", site["mapping"], "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert json.loads(clean.stdout)["would_change_shutdown"] is False

    # someone creates a VM in vCenter (pyVmomi against vcsim, the test's own session)
    from pyVmomi import vim

    si = vsphere_judge(ep)
    content = si.RetrieveContent()
    dc = content.rootFolder.childEntity[0]
    host = next(h for h in content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True).view
                if h.name == "esx3")
    spec = vim.vm.ConfigSpec(name="NEW-PACS-01", guestId="rhel8_64Guest",  # type: ignore[no-untyped-call]
                             files=vim.vm.FileInfo(vmPathName="[san1-ds]"))  # type: ignore[no-untyped-call]
    task = dc.vmFolder.CreateVM_Task(config=spec, pool=host.parent.resourcePool, host=host)
    deadline = time.monotonic() + 30
    while task.info.state not in ("success", "error") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert task.info.state == "success"
    drift = orch("inventory", "diff", site["draft"], "--against", "vsphere", "--map", site["mapping"], "--json")
    assert drift.returncode == 1, drift.stderr
    found = json.loads(drift.stdout)
    assert [m["host"] for m in found["missing"]] == ["new-pacs-01"]
    assert found["missing"][0]["runs_on"] == ["esx3"]
    assert found["gone"] == [] and found["changed"] == []
    human = orch("inventory", "diff", site["draft"], "--against", "vsphere", "--map", site["mapping"])
    assert human.returncode == 1
    assert re.search(r"missing new-pacs-01 .*a shutdown would forget it", human.stdout)
