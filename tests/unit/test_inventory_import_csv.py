"""``orchestrator inventory import csv`` and ``inventory diff --against csv``: a CMDB export as a draft
inventory (merged into a hand-written skeleton), every wrong cell reported at once with its row and
column, and the drift between an inventory and a newer export. Run as the console script."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[2]
CLI = str(REPO / ".venv" / "bin" / "orchestrator")

SKELETON = """\
version: 1
site: {name: csv-hospital}
management: {segment: mgmt}
campuses:
  antwerp: {description: main campus}
segments:
  mgmt:        {subnet: 10.99.0.0/16, zone: management}
  ant-servers: {campus: antwerp, subnet: 10.10.2.0/24, vlan: 120, zone: servers, gateway: ant-core}
  ant-clinical: {campus: antwerp, subnet: 10.10.3.0/24, vlan: 130, zone: clinical, gateway: ant-core}
devices:
  ant-core: {campus: antwerp, platform: cisco_ios, address: 10.99.1.1, role: core, credentials: ops}
hosts:
  # written by hand: its tier must survive
  ad1: {campus: antwerp, segment: ant-servers, address: 10.10.2.10, tier: 0, credentials: ops}
islands:
  # the ED keeps running
  ed: {segments: [ant-clinical], reason: the ED keeps operating}
credentials:
  ops: {username: root, key_file: KEY}
  vcenter: {username: orchestrator, password_env: VCENTER_PASSWORD}
power_controllers:
  vc: {type: vsphere, address: vcenter.example.org, credentials: vcenter}
"""

MAPPING = """\
columns: {name: Hostname, address: IP, vlan: VLAN, role: Role, tier: Tier, depends_on: Depends on, os: OS,
          power: Power}
separator: ";"
os_values: {"Windows Server 2019": windows, "RHEL 8": linux}
defaults: {credentials: ops}
"""

GOOD = """\
Hostname,IP,VLAN,Role,Tier,Depends on,OS,Power
EMR-DB1,10.10.2.20,120,emr-database,1,ad1,RHEL 8,vc:EMR-DB1
EMR-APP1,10.10.2.30,120,emr-app,2,EMR-DB1;ad1,Windows Server 2019,vc:EMR-APP1
PACS1,10.10.3.20,130,pacs,2,ad1,linux,manual
LEGACY1,,120,legacy,3,,Solaris 10,manual
"""

BAD = """\
Hostname,IP,VLAN,Role,Tier,Depends on,OS,Power
EMR-DB1,10.10.2.300,120,emr-database,1,ad1,RHEL 8,vc:EMR-DB1
EMR-APP1,10.10.2.30,120,emr-app,high,EMR-DB1;ad9,linux,vc:EMR-APP1
PACS1,10.10.3.20,999,pacs,2,ad1,linux,nosuch:PACS1
"""


def orch(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env={**os.environ, "COLUMNS": "200"}, timeout=120, check=False, cwd=REPO)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    key = tmp_path / "id_ed25519"
    key.write_text("unused\n")
    out = {"skeleton": tmp_path / "hospital.yml", "mapping": tmp_path / "map.yml", "good": tmp_path / "cmdb.csv",
           "bad": tmp_path / "bad.csv", "draft": tmp_path / "draft.yml"}
    out["skeleton"].write_text(SKELETON.replace("KEY", str(key)))
    out["mapping"].write_text(MAPPING)
    out["good"].write_text(GOOD)
    out["bad"].write_text(BAD)
    return out


def test_every_wrong_cell_is_reported_at_once_and_nothing_is_written(files: dict[str, Path]) -> None:
    done = orch("inventory", "import", "csv", files["bad"], "--map", files["mapping"], "--into", files["skeleton"],
                "-o", files["draft"])
    assert done.returncode == 2
    err = " ".join(done.stderr.split())
    for where, what in [("row 2, column 'IP'", "not an IPv4 address: '10.10.2.300'"),
                        ("row 3, column 'Tier'", "not a tier: 'high'"),
                        ("row 3, column 'Depends on'", "'ad9' is neither a row of this file nor a host"),
                        ("row 4, column 'VLAN'", "VLAN 999"),
                        ("row 4, column 'Power'", "'nosuch' is no power controller")]:
        assert f"{files['bad']}:{where.split(',')[0].split()[1]}: {where}: {what}" in err, (where, err)
    assert not files["draft"].exists()


def test_a_mapping_naming_an_unknown_key_is_refused_with_its_line(files: dict[str, Path]) -> None:
    files["mapping"].write_text(MAPPING + "colums: {name: Hostname}\n")
    done = orch("inventory", "import", "csv", files["good"], "--map", files["mapping"], "--into", files["skeleton"],
                "-o", files["draft"])
    assert done.returncode == 2
    assert f"{files['mapping']}:6: colums: unknown key 'colums'" in " ".join(done.stderr.split())


def test_a_good_export_merges_into_the_skeleton_and_validates_once_the_todo_is_filled(
        files: dict[str, Path]) -> None:
    done = orch("inventory", "import", "csv", files["good"], "--map", files["mapping"], "--into", files["skeleton"],
                "-o", files["draft"], "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["added"] == ["emr-db1", "emr-app1", "pacs1"]
    (legacy,) = summary["undecided"]
    assert legacy["host"] == "legacy1" and legacy["source"] == "row 5"
    assert "no address" in " ".join(legacy["todo"]) and "'Solaris 10'" in " ".join(legacy["todo"])
    assert stat.S_IMODE(files["draft"].stat().st_mode) == 0o600
    text = files["draft"].read_text()
    assert "# written by hand: its tier must survive" in text and "# the ED keeps running" in text
    doc = YAML(typ="safe").load(text)
    assert doc["hosts"]["emr-app1"] == {
        "campus": "antwerp", "segment": "ant-servers", "address": "10.10.2.30", "role": "emr-app", "tier": 2,
        "os": "windows", "depends_on": ["emr-db1", "ad1"], "power": {"controller": "vc", "vm": "EMR-APP1"},
        "credentials": "ops"}
    assert doc["hosts"]["ad1"]["tier"] == 0
    assert "legacy1" not in doc["hosts"]
    todo = [line for line in text.splitlines() if line.startswith("  # legacy1: ")]
    assert len(todo) == 1 and "address: TODO" in todo[0] and "os: TODO" in todo[0]

    # as drafted it is already a valid inventory of what was decided (the TODO is a comment)...
    first = orch("validate", files["draft"], "--json")
    assert first.returncode == 0 and json.loads(first.stdout)["counts"]["hosts"] == 4, first.stdout
    # ...and once the engineer fills the TODO in and uncomments it, of everything
    filled = text.replace(todo[0], todo[0].replace("  # ", "  ", 1).replace("address: TODO", "address: 10.10.2.99")
                          .replace("os: TODO", "os: linux"))
    files["draft"].write_text(filled)
    valid = orch("validate", files["draft"], "--json")
    assert valid.returncode == 0, valid.stdout
    assert json.loads(valid.stdout)["counts"]["hosts"] == 5
    assert orch("plan", files["draft"], "--mode", "shutdown").returncode == 0


def test_diff_against_a_newer_export_names_the_new_the_gone_and_the_moved(files: dict[str, Path]) -> None:
    assert orch("inventory", "import", "csv", files["good"], "--map", files["mapping"], "--into",
                files["skeleton"], "-o", files["draft"]).returncode == 0
    text = files["draft"].read_text()
    files["draft"].write_text(text.replace("  # legacy1: ", "  legacy1: ")
                              .replace("address: TODO", "address: 10.10.2.99").replace("os: TODO", "os: linux"))
    newer = GOOD.replace("PACS1,10.10.3.20", "PACS1,10.10.3.21") + "LAB1,10.10.2.40,120,lab,2,ad1,linux,manual\n"
    newer = newer.replace("LEGACY1,,120,legacy,3,,Solaris 10,manual\n", "")
    files["good"].write_text(newer)
    done = orch("inventory", "diff", files["draft"], "--against", "csv", "--file", files["good"], "--map",
                files["mapping"], "--json")
    assert done.returncode == 1
    found = json.loads(done.stdout)
    assert [m["host"] for m in found["missing"]] == ["lab1"]
    assert found["gone"] == ["ad1", "legacy1"]
    assert found["changed"] == [{"host": "pacs1", "key": "address", "inventory": "10.10.3.20", "estate": "10.10.3.21"}]
