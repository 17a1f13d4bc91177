"""orchestrator.drivers.ansible_inventory: groups, host vars, no secrets, and Ansible itself can read it."""

from __future__ import annotations

import ipaddress
import json
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.drivers.ansible_inventory import dumps, group_name, to_ansible_inventory
from orchestrator.errors import UsageError
from orchestrator.model import Campus, Credential, Host, Inventory, Island, Segment, Site

ANSIBLE_INVENTORY = Path(sys.executable).parent / "ansible-inventory"
PASSWORD = "s3cret-Pa55word!"


def make_inventory(tmp_path: Path) -> Inventory:
    def seg(name: str, subnet: str, zone: str, campus: str | None) -> Segment:
        return Segment(name, ipaddress.IPv4Network(subnet), zone, campus=campus)

    def host(name: str, segment: str, n: int, **kw: Any) -> Host:
        return Host(
            name=name,
            segment=segment,
            address=ipaddress.IPv4Address(f"10.10.{n}.10"),
            management_address=ipaddress.IPv4Address(f"10.99.{n}.10"),
            credentials=kw.pop("credentials", "lab"),
            **kw,
        )

    hosts = [
        host("ant-ad1", "ant-servers", 2, campus="antwerp", role="identity", tier=0),
        host(
            "ant-emr-db1",
            "ant-servers",
            3,
            campus="antwerp",
            role="emr-database",
            tier=1,
            depends_on=("ant-ad1",),
            services=("postgresql", "emr-api"),
            vars={"pg_version": 15, "pg_comment": "{{ not a template }}"},
        ),
        host("ant-ed-triage1", "ant-ed", 5, campus="antwerp", tier=2, depends_on=("ant-ad1",)),
        host("deu-files1", "deu-servers", 6, campus="deurne", role="file-server", tier=2, credentials="vault"),
        host("deu-print1", "deu-servers", 7, campus="deurne", tier=3, keep_running=True),
    ]
    return Inventory(
        path=str(tmp_path / "inventory.yml"),
        sha256="0" * 64,
        site=Site("example-hospital"),
        management_segment="mgmt",
        campuses={"antwerp": Campus("antwerp"), "deurne": Campus("deurne")},
        segments={
            "mgmt": seg("mgmt", "10.99.0.0/16", "management", None),
            "ant-servers": seg("ant-servers", "10.10.2.0/24", "servers", "antwerp"),
            "ant-ed": seg("ant-ed", "10.10.5.0/24", "emergency", "antwerp"),
            "deu-servers": seg("deu-servers", "10.20.2.0/24", "servers", "deurne"),
        },
        devices={},
        links={},
        hosts={h.name: h for h in hosts},
        islands={"emergency-department": Island("emergency-department", "ED keeps operating", segments=("ant-ed",))},
        credentials={
            "lab": Credential("lab", "root", key_file="keys/lab_ed25519", known_hosts="/srv/lab/known_hosts"),
            "vault": Credential("vault", "ops", password_env="VAULT_OPS_PASSWORD"),
        },
    )


@pytest.fixture
def inventory(tmp_path: Path) -> Inventory:
    return make_inventory(tmp_path)


def members(data: dict[str, Any], group: str) -> list[str]:
    return sorted(data["all"]["children"][group]["hosts"])


def test_groups_by_campus_segment_role_tier_and_kept(inventory: Inventory) -> None:
    data = to_ansible_inventory(inventory)
    children = data["all"]["children"]
    assert members(data, "campus_antwerp") == ["ant-ad1", "ant-ed-triage1", "ant-emr-db1"]
    assert members(data, "campus_deurne") == ["deu-files1", "deu-print1"]
    assert members(data, "segment_ant_servers") == ["ant-ad1", "ant-emr-db1"]
    assert members(data, "segment_ant_ed") == ["ant-ed-triage1"]
    assert members(data, "role_emr_database") == ["ant-emr-db1"]
    assert members(data, "tier_0") == ["ant-ad1"]
    assert members(data, "tier_2") == ["ant-ed-triage1", "deu-files1"]
    assert members(data, "kept") == ["ant-ed-triage1", "deu-print1"]
    assert members(data, "stoppable") == ["ant-ad1", "ant-emr-db1", "deu-files1"]
    assert "role_" not in children  # a host without a role is in no role group
    assert all(name.replace("_", "").isalnum() for name in children)


def test_host_vars_connection_and_facts(inventory: Inventory, tmp_path: Path) -> None:
    hv = to_ansible_inventory(inventory)["all"]["hosts"]
    db = hv["ant-emr-db1"]
    assert db["ansible_host"] == "10.99.3.10"  # management address wins over vars: ansible_host
    assert db["ansible_user"] == "root"
    assert db["ansible_ssh_private_key_file"] == str(tmp_path / "keys/lab_ed25519")
    assert shlex.split(db["ansible_ssh_common_args"]) == [
        "-o", 'UserKnownHostsFile="/srv/lab/known_hosts"', "-o", "StrictHostKeyChecking=yes",
        "-o", "KexAlgorithms=^curve25519-sha256,curve25519-sha256@libssh.org", "-o", "IdentitiesOnly=yes"]
    assert db["ansible_connection"] == "ssh" and db["ansible_port"] == 22 and db["ansible_host_key_checking"] is True
    assert db["services"] == ["postgresql", "emr-api"]
    assert db["depends_on"] == ["ant-ad1"]
    assert db["pg_version"] == 15 and db["pg_comment"] == "{{ not a template }}"  # vars: passed through
    assert db["orchestrator_tier"] == 1 and db["orchestrator_segment"] == "ant-servers"
    assert "orchestrator_kept_reason" not in db
    assert hv["ant-ed-triage1"]["orchestrator_kept_reason"].startswith("island emergency-department")
    assert hv["deu-print1"]["orchestrator_kept_reason"] == "keep_running: true"
    assert hv["ant-ad1"]["services"] == [] and hv["ant-ad1"]["depends_on"] == []


def test_password_is_a_reference_never_the_secret(inventory: Inventory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_OPS_PASSWORD", PASSWORD)
    data = to_ansible_inventory(inventory)
    files = data["all"]["hosts"]["deu-files1"]
    assert files["ansible_password"] == "{{ lookup('env', 'VAULT_OPS_PASSWORD') }}"
    assert "ansible_ssh_private_key_file" not in files
    assert "StrictHostKeyChecking=yes" in files["ansible_ssh_common_args"]
    assert PASSWORD not in json.dumps(data)
    assert PASSWORD not in yaml.safe_dump(data)


def test_limit_to_hosts_and_unknown_hosts_named(inventory: Inventory) -> None:
    data = to_ansible_inventory(inventory, ["deu-files1", "ant-ad1", "ant-ad1"])
    assert list(data["all"]["hosts"]) == ["deu-files1", "ant-ad1"]  # the order given: Ansible's play order
    written = json.loads(dumps(data))
    assert list(written["all"]["hosts"]) == ["deu-files1", "ant-ad1"]
    assert list(written["all"]) == sorted(written["all"]) and list(written["all"]["children"]) == sorted(
        written["all"]["children"])
    assert list(to_ansible_inventory(inventory)["all"]["hosts"]) == sorted(inventory.hosts)
    assert members(data, "kept") == []
    with pytest.raises(UsageError) as err:
        to_ansible_inventory(inventory, ["ant-ad1", "nope", "nada"])
    assert "nope" in str(err.value) and "nada" in str(err.value)


def test_deterministic_and_plain_data(inventory: Inventory) -> None:
    first = yaml.safe_dump(to_ansible_inventory(inventory), sort_keys=False)
    assert first == yaml.safe_dump(to_ansible_inventory(inventory), sort_keys=False)
    assert yaml.safe_load(first) == to_ansible_inventory(inventory)


def test_group_name() -> None:
    assert group_name("segment", "ant-servers") == "segment_ant_servers"
    assert group_name("tier", 0) == "tier_0"


def test_ansible_reads_the_export(inventory: Inventory, tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(to_ansible_inventory(inventory)))
    proc = subprocess.run(
        [str(ANSIBLE_INVENTORY), "-i", str(path), "--list"],
        capture_output=True,
        text=True,
        check=False,
        env={
            "PATH": str(ANSIBLE_INVENTORY.parent) + ":/usr/bin:/bin",
            "ANSIBLE_HOME": str(tmp_path / "ah"),
            "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
        },
    )
    assert proc.returncode == 0, proc.stderr
    listed = json.loads(proc.stdout)
    assert sorted(listed["kept"]["hosts"]) == ["ant-ed-triage1", "deu-print1"]
    assert sorted(listed["tier_1"]["hosts"]) == ["ant-emr-db1"]
    hostvars = listed["_meta"]["hostvars"]
    assert hostvars["ant-emr-db1"]["ansible_host"] == "10.99.3.10"
    assert "Invalid characters" not in proc.stderr


def test_dumps_marks_every_string_unsafe_but_the_password_reference(inventory: Inventory) -> None:
    from orchestrator.drivers.ansible_inventory import dumps

    data = to_ansible_inventory(inventory)
    marked = json.loads(dumps(data))
    hv = marked["all"]["hosts"]
    assert hv["ant-emr-db1"]["services"] == [{"__ansible_unsafe": "postgresql"}, {"__ansible_unsafe": "emr-api"}]
    assert hv["ant-emr-db1"]["pg_comment"] == {"__ansible_unsafe": "{{ not a template }}"}
    assert hv["ant-emr-db1"]["pg_version"] == 15 and hv["ant-emr-db1"]["ansible_port"] == 22
    assert hv["deu-files1"]["ansible_password"] == "{{ lookup('env', 'VAULT_OPS_PASSWORD') }}"  # the one template
    assert marked["all"]["children"]["kept"]["hosts"] == {"ant-ed-triage1": {}, "deu-print1": {}}


def test_ansible_reads_unsafe_values_back_as_the_same_text(inventory: Inventory, tmp_path: Path) -> None:
    from orchestrator.drivers.ansible_inventory import dumps

    path = tmp_path / "hosts.json"
    path.write_text(dumps(to_ansible_inventory(inventory)))
    proc = subprocess.run([str(ANSIBLE_INVENTORY), "-i", str(path), "--host", "ant-emr-db1"], capture_output=True,
                          text=True, check=False, env={"PATH": str(ANSIBLE_INVENTORY.parent) + ":/usr/bin:/bin",
                                                       "ANSIBLE_HOME": str(tmp_path / "ah"),
                                                       "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True"})
    assert proc.returncode == 0, proc.stderr
    hostvars = json.loads(proc.stdout)
    assert hostvars["services"] == [{"__ansible_unsafe": "postgresql"}, {"__ansible_unsafe": "emr-api"}] or \
        hostvars["services"] == ["postgresql", "emr-api"]
    assert hostvars["ansible_host"] in ("10.99.3.10", {"__ansible_unsafe": "10.99.3.10"})


def test_openssh_offers_curve25519_first_and_keeps_its_own_list(inventory: Inventory) -> None:
    """The real OpenSSH client reads the export's options (``ssh -G``: configuration only, nothing is
    sent): curve25519 first, as paramiko negotiates, every algorithm of its own list still offered."""
    host = to_ansible_inventory(inventory)["all"]["hosts"]["ant-ad1"]  # a lab address, never connected to
    args = shlex.split(host["ansible_ssh_common_args"])
    resolved = subprocess.run(["ssh", "-G", *args, host["ansible_host"]], capture_output=True, text=True,
                              check=True, stdin=subprocess.DEVNULL).stdout
    default = subprocess.run(["ssh", "-G", host["ansible_host"]], capture_output=True, text=True, check=True,
                             stdin=subprocess.DEVNULL).stdout

    def kex(config: str) -> list[str]:
        return next(line.split()[1] for line in config.splitlines() if line.startswith("kexalgorithms ")).split(",")

    offered = kex(resolved)
    assert offered[0] == "curve25519-sha256"
    assert sorted(offered) == sorted(kex(default))
