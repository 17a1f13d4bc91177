"""Hostile and careless inventories are refused by `orchestrator validate`: exit 2, FILE:LINE, the key.

Issue 12, findings 2 (connection settings in a host's vars), 3 (SSH option syntax in credential
paths; relative paths resolved once, against the inventory's directory), 4 (services that are not
systemd unit names), 6 (an interface a device CLI would misread; a name with a trailing newline),
7 (loader crashes, alias bombs, NaN and infinity) and 15 (a power driver that cannot work). Every
case runs the real command line entry in process on a file, as an operator would.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.inventory import load_inventory, validate_file

REPO = Path(__file__).resolve().parent.parent.parent

# Valid under --strict; one key per line, so every line number below is exact.
BASE = """\
version: 1
site:
  name: test-hospital
  timezone: Europe/Brussels
management:
  segment: mgmt
campuses:
  antwerp: {}
segments:
  mgmt:
    subnet: 10.99.0.0/16
    zone: management
  srv:
    campus: antwerp
    subnet: 10.10.2.0/24
    vlan: 120
    zone: servers
    gateway: core
    interface: vlan120
devices:
  core:
    campus: antwerp
    platform: cisco_ios
    address: 10.99.0.2
    role: core
    credentials: lab
  fw:
    campus: antwerp
    platform: linux
    address: 10.99.0.3
    role: firewall
    credentials: lab
links:
  vendor:
    kind: vendor
    device: fw
    peer: 10.200.0.0/24
    interface: vendor0
hosts:
  db1:
    campus: antwerp
    segment: srv
    address: 10.10.2.10
    management_address: 10.99.2.10
    tier: 1
    services: [postgresql]
    credentials: lab
credentials:
  lab:
    username: root
    key_file: /etc/orchestrator/id_ed25519
    known_hosts: /etc/orchestrator/known_hosts
"""


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def line_of(text: str, snippet: str) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if snippet in line:
            return number
    raise AssertionError(f"{snippet!r} not found")


def validate(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[object, str, Path]:
    """``orchestrator validate FILE [ARGS]`` in process: (exit code, stderr, file). A traceback fails."""
    path = tmp_path / "inv.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["validate", str(path), *args])
    return info.value.code, capsys.readouterr().err, path


def refused(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str], line: int, key: str, *words: str,
            strict: bool = True) -> str:
    """Assert exit 2 with ``FILE:LINE: KEY`` and ``words`` on that line of the output; return the line."""
    code, err, path = validate(tmp_path, text, capsys, *(["--strict"] if strict else []))
    assert code == 2, err
    prefix = f"{path}:{line}: {key}:"
    found = [ln for ln in err.splitlines() if ln.strip().startswith(prefix)]
    assert found, f"no {prefix!r} in:\n{err}"
    assert all(w in found[0] for w in words), found[0]
    assert "Traceback" not in err
    return found[0]


def test_base_is_valid_under_strict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, _ = validate(tmp_path, BASE, capsys, "--strict")
    assert code == 0, err


# --------------------------------------------------------------------------------------------
# Finding 2: vars may not change how Ansible connects
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [
    "ansible_ssh_host", "ansible_host", "ansible_port", "ansible_user", "ansible_connection",
    "ansible_host_key_checking", "ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_become",
    "ansible_become_pass", "ansible_python_interpreter", "ansible_shell_executable", "ANSIBLE_Host",
    "hostvars", "inventory_hostname", "remote_user", "orchestrator_power", "services", "stop_host_release_dir",
    "stop_host_release_wait_s",
])
def test_connection_settings_in_host_vars_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       key: str) -> None:
    text = edit(BASE, "    services: [postgresql]\n", f"    services: [postgresql]\n    vars:\n      {key}: 10.0.0.9\n")
    refused(tmp_path, text, capsys, line_of(text, f"{key}: 10.0.0.9"), f"hosts.db1.vars.{key}", f"'{key}'",
            strict=False)


def test_plain_host_vars_stay_allowed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = edit(BASE, "    services: [postgresql]\n",
                "    services: [postgresql]\n    vars: {os: windows-server-2022, vendor_appliance: true}\n")
    code, err, path = validate(tmp_path, text, capsys, "--strict")
    assert code == 0, err
    assert dict(load_inventory(path).hosts["db1"].vars) == {"os": "windows-server-2022", "vendor_appliance": True}


# --------------------------------------------------------------------------------------------
# Finding 3: credential paths are paths, resolved once
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value"), [
    ("known_hosts", "'/k -o StrictHostKeyChecking=no -o ProxyCommand=id'"),
    ("known_hosts", "-oProxyCommand=id"),
    ("key_file", "'-i/tmp/evil'"),
    ("key_file", '"/keys/id\\tx"'),
    ("key_file", '"/keys/id\\nx"'),
    ("known_hosts", "'/etc/%h'"),
    ("known_hosts", "'/etc/${HOME}'"),
    ("key_file", "'\"/keys/id\"'"),
])
def test_credential_paths_with_option_syntax_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          key: str, value: str) -> None:
    current = "    key_file: /etc/orchestrator/id_ed25519\n" if key == "key_file" else \
        "    known_hosts: /etc/orchestrator/known_hosts\n"
    text = edit(BASE, current, f"    {key}: {value}\n")
    refused(tmp_path, text, capsys, line_of(text, f"{key}: {value}"), f"credentials.lab.{key}", strict=False)


def test_relative_credential_paths_resolve_against_the_inventory_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.drivers.ansible_inventory import resolve_path

    inv_dir = tmp_path / "site"
    inv_dir.mkdir()
    text = edit(BASE, "    key_file: /etc/orchestrator/id_ed25519\n", "    key_file: keys/id_ed25519\n")
    text = edit(text, "    known_hosts: /etc/orchestrator/known_hosts\n", "    known_hosts: known_hosts\n")
    (inv_dir / "inv.yml").write_text(text, encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a client resolving against the working directory would look here
    inventory = load_inventory(Path("..") / "site" / "inv.yml")
    cred = inventory.credentials["lab"]
    assert cred.key_file == str(inv_dir / "keys" / "id_ed25519")
    assert cred.known_hosts == str(inv_dir / "known_hosts")
    assert os.path.isabs(cred.key_file) and os.path.isabs(cred.known_hosts)
    # paramiko (which expanded it against the working directory) and OpenSSH/Ansible read the same file
    assert os.path.expanduser(cred.known_hosts) == resolve_path(inventory, cred.known_hosts) == \
        str(inv_dir / "known_hosts")
    # a run's copy of the inventory resolves against the original's directory when told so
    copy = tmp_path / "runs" / "r1" / "inventory.yml"
    copy.parent.mkdir(parents=True)
    copy.write_text(text, encoding="utf-8")
    assert load_inventory(copy, base_dir=inv_dir).credentials["lab"].key_file == str(inv_dir / "keys" / "id_ed25519")
    # ~ is still expanded by each client, as before
    home = edit(text, "    key_file: keys/id_ed25519\n", "    key_file: ~/.ssh/id_ed25519\n")
    (inv_dir / "inv.yml").write_text(home, encoding="utf-8")
    assert load_inventory(inv_dir / "inv.yml").credentials["lab"].key_file == "~/.ssh/id_ed25519"


# --------------------------------------------------------------------------------------------
# Finding 4: services are systemd unit names
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["'x; id'", "'$(id)'", "'-H evil'", "'a b'", '"nginx\\n"', "'`id`'",
                                     "'a|b'", "\"x'y\"", "'.hidden'", "''"])
def test_services_that_are_not_unit_names_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      service: str) -> None:
    text = edit(BASE, "    services: [postgresql]\n", f"    services: [{service}]\n")
    refused(tmp_path, text, capsys, line_of(text, "services: ["), "hosts.db1.services[0]", strict=False)


def test_real_unit_names_are_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = edit(BASE, "    services: [postgresql]\n",
                "    services: [postgresql@15-main.service, getty@tty1, systemd-journald, kea-dhcp4-server, "
                "dbus-org.freedesktop.resolve1, 'user@1000.service']\n")
    code, err, _ = validate(tmp_path, text, capsys, "--strict")
    assert code == 0, err


# --------------------------------------------------------------------------------------------
# Finding 6: what the device renderer would refuse mid-emergency is refused at validate
# --------------------------------------------------------------------------------------------


def test_segment_interface_a_device_cli_would_misread_is_refused(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    text = edit(BASE, "    interface: vlan120\n", '    interface: "Vlan 120"\n')
    for strict in (False, True):
        refused(tmp_path, text, capsys, line_of(text, "Vlan 120"), "segments.srv.interface",
                "isolate-segment", "cisco_ios", "'Vlan 120'", strict=strict)


def test_link_interface_a_device_cli_would_misread_is_refused(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    text = edit(BASE, "    interface: vendor0\n", "    interface: 'vendor0; nft flush ruleset'\n")
    refused(tmp_path, text, capsys, line_of(text, "nft flush"), "links.vendor.interface", "cut-link", "linux",
            strict=False)


def test_interface_with_a_trailing_newline_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = edit(BASE, "    interface: vlan120\n", '    interface: "vlan120\\n"\n')
    refused(tmp_path, text, capsys, line_of(text, 'interface: "vlan120'), "segments.srv.interface", strict=False)


def test_missing_interface_a_platform_needs_is_refused_by_strict(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    text = edit(BASE, "    interface: vlan120\n", "")
    refused(tmp_path, text, capsys, line_of(text, "gateway: core"), "segments.srv.gateway",
            "needs the interface")


@pytest.mark.parametrize(("old", "new", "key"), [
    ("  name: test-hospital\n", '  name: "test-hospital\\n"\n', "site.name"),
    ("  srv:\n", '  "srv\\n":\n', "segments.'srv\\n'"),
    ("    gateway: core\n", '    gateway: "core\\n"\n', "segments.srv.gateway"),
    ("    credentials: lab\n    address: 10.99.0.3", "    credentials: lab\n    address: 10.99.0.3", ""),
])
def test_names_with_a_trailing_newline_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   old: str, new: str, key: str) -> None:
    if not key:  # the one-validator check: hosts' credentials names too
        text = edit(BASE, "    tier: 1\n    services: [postgresql]\n    credentials: lab\n",
                    '    tier: 1\n    services: [postgresql]\n    credentials: "lab\\n"\n')
        refused(tmp_path, text, capsys, line_of(text, 'credentials: "lab'), "hosts.db1.credentials", strict=False)
        return
    text = edit(BASE, old, new)
    refused(tmp_path, text, capsys, line_of(text, new.strip().split(":")[0]), key, strict=False)


# --------------------------------------------------------------------------------------------
# Finding 7: loader crashes, alias bombs, NaN and infinity
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("old", "new", "key", "words"), [
    ("site:\n  name: test-hospital\n  timezone: Europe/Brussels\n", "site: {<<: 1, name: test-hospital}\n", "site",
     ("merge",)),
    ("    role: core\n", "    role: !vault x\n", "devices.core.role", ("!vault",)),
    ("version: 1\n", "version: !!int x\n", "version", ("!!int",)),
    ("    tier: 1\n", "    tier: -.inf\n", "hosts.db1.tier", ("finite",)),
    ("    tier: 1\n", "    tier: .nan\n", "hosts.db1.tier", ("finite",)),
    ("    vlan: 120\n", "    vlan: .inf\n", "segments.srv.vlan", ("finite",)),
    ("    username: root\n", "    username: root\n    connect_timeout_s: .nan\n",
     "credentials.lab.connect_timeout_s", ("finite",)),
    ("    username: root\n", "    username: root\n    connect_timeout_s: -.Inf\n",
     "credentials.lab.connect_timeout_s", ("finite",)),
    ("    role: core\n", "    role: 2026-12-02\n", "devices.core.role", ("!!timestamp",)),
    ("    role: core\n", "    role: !!binary aGk=\n", "devices.core.role", ("!!binary",)),
    ("    role: core\n", "    role: !!bool maybe\n", "devices.core.role", ("!!bool",)),
    ("    role: core\n", "    role: !!timestamp x\n", "devices.core.role", ("!!timestamp",)),
    ("campuses:\n", "campuses: !!set\n", "campuses", ("!!set",)),
    ("campuses:\n", "campuses: !Ref\n", "campuses", ("!Ref",)),
])
def test_loader_inputs_that_crashed_are_exit_2_with_a_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           old: str, new: str, key: str,
                                                           words: tuple[str, ...]) -> None:
    text = edit(BASE, old, new)
    refused(tmp_path, text, capsys, line_of(text, new.strip().splitlines()[-1]), key, *words, strict=False)


def test_an_alias_that_contains_itself_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = edit(BASE, "    services: [postgresql]\n", "    services: &loop [postgresql, *loop]\n")
    refused(tmp_path, text, capsys, line_of(text, "&loop"), "hosts.db1.services[1]", "contains it", strict=False)


def _alias_bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        prev, cur = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_quickly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bomb = _alias_bomb()
    text = BASE + "".join(f"# padding to the size of the reported bomb {i:05d}\n" for i in range(1000)) + \
        bomb.replace("a: &a", "zzz: &a", 1)
    assert len(text) > 49_000  # a 49 KB file that expands to 9**10 (3.5 billion) strings
    started = time.monotonic()
    line = refused(tmp_path, text, capsys, line_of(text, "zzz: &a"), "(yaml)", "alias", strict=False)
    assert time.monotonic() - started < 5.0, line


def test_alias_bomb_at_the_top_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, path = validate(tmp_path, _alias_bomb(), capsys)
    assert code == 2 and re.search(rf"{re.escape(str(path))}:\d+: \(yaml\): .*alias", err), err


def test_small_aliases_and_merges_still_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = edit(BASE, "    zone: servers\n", "    zone: servers\n    description: &d the servers\n")
    text = edit(text, "    interface: vendor0\n", "    interface: vendor0\n    description: *d\n")
    text = edit(text, "  lab:\n    username: root\n", "  lab: &lab\n    username: root\n")
    text = text + "  ops: {<<: *lab}\n"
    code, err, path = validate(tmp_path, text, capsys, "--strict")
    assert code == 0, err
    inventory = load_inventory(path)
    assert inventory.links["vendor"].description == "the servers"
    assert inventory.credentials["ops"].username == "root"


def test_control_characters_and_bad_encoding_name_their_line(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    text = edit(BASE, "    role: firewall\n", "    role: fire\x01wall\n")
    refused(tmp_path, text, capsys, line_of(text, "fire\x01wall"), "(yaml)", "U+0001", strict=False)
    path = tmp_path / "latin1.yml"
    path.write_bytes(edit(BASE, "    role: firewall\n", "    role: fire\xe9wall\n").encode("latin-1"))
    with pytest.raises(SystemExit) as info:
        main(["validate", str(path)])
    assert info.value.code == 2
    assert f"{path}:{line_of(BASE, 'role: firewall')}: (file): not UTF-8" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Finding 15: a power driver that cannot work is refused
# --------------------------------------------------------------------------------------------


def test_power_driver_that_cannot_work_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = edit(BASE, "    tier: 1\n", "    tier: 1\n    power: ipmi\n")
    line = refused(tmp_path, text, capsys, line_of(text, "power: ipmi"), "hosts.db1.power",
                   "no working power driver for 'ipmi'", "power: manual", strict=False)
    assert "fix:" in line


@pytest.mark.parametrize("power", ["manual", "lab", "vagrant"])
def test_working_power_short_forms_stay_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              power: str) -> None:
    text = edit(BASE, "    tier: 1\n", f"    tier: 1\n    power: {power}\n")
    code, err, _ = validate(tmp_path, text, capsys, "--strict")
    assert code == 0, err


def test_every_shipped_inventory_validates() -> None:
    for path in sorted((REPO / "inventories").glob("*.yml")):
        result = validate_file(path, strict=True)
        assert not [h.name for h in result.inventory.hosts.values() if h.power == "ipmi"], path
