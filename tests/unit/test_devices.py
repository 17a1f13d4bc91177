"""Device command templates: every platform x action renders, deterministically, with its essential lines."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import pytest

from orchestrator.drivers import devices
from orchestrator.errors import DriverError, UnknownDriverError
from orchestrator.model import Device, Link, LinkKind, Segment

SEGMENT = Segment(
    name="ant-servers",
    subnet=ipaddress.IPv4Network("10.10.2.0/24"),
    zone="servers",
    gateway="gw",
    interface="vlan120",
    gateway_address=ipaddress.IPv4Address("10.10.2.1"),
)
LINK = Link(
    name="vendor-registration",
    kind=LinkKind.VENDOR,
    device="gw",
    peer=ipaddress.IPv4Network("10.200.0.0/24"),
    interface="vendor0",
)
ISO = "orchestrator:isolate-segment:ant-servers"
CUT = "orchestrator:cut-link:vendor-registration"


def device(platform: str, **vars_: Any) -> Device:
    return Device("gw", platform, ipaddress.IPv4Address("10.99.1.1"), "core", "lab", vars=vars_)


def render(platform: str, action: str, vars_: Mapping[str, Any] | None = None, **kw: Any) -> list[str]:
    kw.setdefault("segment", SEGMENT)
    kw.setdefault("link", LINK)
    return devices.render(platform, action, device=device(platform, **(vars_ or {})), **kw)


@pytest.mark.parametrize("platform", devices.PLATFORMS)
@pytest.mark.parametrize("action", devices.ACTIONS)
def test_every_platform_and_action_renders_deterministically(platform: str, action: str) -> None:
    first = render(platform, action)
    assert first, f"{platform}/{action} rendered nothing"
    assert first == render(platform, action)
    for line in first:
        assert line == line.strip() and line
        assert "{{" not in line and "{%" not in line and "{#" not in line


@pytest.mark.parametrize("platform", devices.PLATFORMS)
def test_every_template_file_exists(platform: str) -> None:
    for action in devices.ACTIONS:
        assert devices.template_path(platform, action).is_file()


def test_unknown_platform_lists_valid_ones() -> None:
    with pytest.raises(UnknownDriverError) as err:
        devices.render("cisco_xr", "show")
    assert "cisco_xr" in str(err.value)
    for platform in devices.PLATFORMS:
        assert platform in str(err.value)


def test_unknown_action_lists_valid_ones() -> None:
    with pytest.raises(UnknownDriverError) as err:
        devices.render("linux", "reboot")
    for action in devices.ACTIONS:
        assert action in str(err.value)


def test_markers_name_the_change_even_for_undo() -> None:
    assert devices.marker("isolate-segment", "x") == "orchestrator:isolate-segment:x"
    assert devices.marker("reconnect-segment", "x") == "orchestrator:isolate-segment:x"
    assert devices.marker("restore-link", "v") == "orchestrator:cut-link:v"


# -- linux ---------------------------------------------------------------------------------------


def test_linux_isolate_uses_own_table_and_drops_both_ways_and_input() -> None:
    lines = render("linux", "isolate-segment")
    text = "\n".join(lines)
    assert lines[0] == "nft add table inet orchestrator"
    assert "hook forward priority -10 ; policy accept" in text
    assert "hook input priority -10 ; policy accept" in text
    for chain, match in (("forward", "iifname"), ("forward", "oifname"), ("input", "iifname")):
        rule = f'{match} "vlan120" drop comment "{ISO}"'
        expected = (
            f"nft list chain inet orchestrator {chain} | grep -qF '{rule}' || "
            f"nft 'add rule inet orchestrator {chain} {rule}'"
        )
        assert expected in lines
    # nothing outside the product's table is touched
    assert all("inet orchestrator" in line for line in lines)


def test_linux_undo_deletes_by_handle_with_the_marker() -> None:
    lines = render("linux", "reconnect-segment")
    assert len(lines) == 2
    for chain, line in zip(("forward", "input"), lines, strict=True):
        assert f'comment "{ISO}" # handle' in line
        assert f'nft delete rule inet orchestrator {chain} handle "$h"' in line
    assert all(CUT in line for line in render("linux", "restore-link"))


def test_linux_cut_link_by_interface_and_by_prefix() -> None:
    by_interface = "\n".join(render("linux", "cut-link"))
    assert f'iifname "vendor0" drop comment "{CUT}"' in by_interface
    assert f'oifname "vendor0" drop comment "{CUT}"' in by_interface
    no_interface = Link("vendor-registration", LinkKind.VENDOR, "gw", ipaddress.IPv4Network("10.200.0.0/24"))
    by_prefix = "\n".join(render("linux", "cut-link", link=no_interface))
    assert f'ip saddr 10.200.0.0/24 drop comment "{CUT}"' in by_prefix
    assert f'ip daddr 10.200.0.0/24 drop comment "{CUT}"' in by_prefix


def test_linux_refuses_to_cut_the_whole_internet_by_prefix() -> None:
    internet = Link("internet", LinkKind.INTERNET, "gw", ipaddress.IPv4Network("0.0.0.0/0"))
    with pytest.raises(DriverError) as err:
        render("linux", "cut-link", link=internet)
    assert "links.internet.interface" in str(err.value)


def test_linux_backup_and_show() -> None:
    assert render("linux", "show") == ["nft list ruleset"]
    assert render("linux", "backup-config")[0] == "nft list ruleset"


# -- cisco_ios and friends -----------------------------------------------------------------------


def test_cisco_ios_isolate_shuts_the_segment_interface() -> None:
    assert render("cisco_ios", "isolate-segment") == ["interface vlan120", "shutdown"]
    assert render("cisco_ios", "reconnect-segment") == ["interface vlan120", "no shutdown"]


def test_cisco_ios_cuts_a_link_by_shutdown_by_default_because_frr_has_no_interface_acls() -> None:
    assert render("cisco_ios", "cut-link") == ["interface vendor0", "shutdown"]
    assert render("cisco_ios", "restore-link") == ["interface vendor0", "no shutdown"]


def test_cisco_ios_acl_method_denies_the_peer_both_ways() -> None:
    lines = render("cisco_ios", "cut-link", {"cut_link_method": "acl"})
    assert "ip access-list extended ORCH-CUT-vendor-registration" in lines
    assert "deny ip 10.200.0.0 0.0.0.255 any" in lines
    assert "deny ip any 10.200.0.0 0.0.0.255" in lines
    assert lines.index("interface vendor0") < lines.index("ip access-group ORCH-CUT-vendor-registration in")
    undo = render("cisco_ios", "restore-link", {"cut_link_method": "acl"})
    assert "no ip access-group ORCH-CUT-vendor-registration in" in undo
    assert undo[-1] == "no ip access-list extended ORCH-CUT-vendor-registration"


@pytest.mark.parametrize(
    ("prefix", "wildcard"),
    [("10.0.0.0/8", "0.255.255.255"), ("10.4.0.0/14", "0.3.255.255"), ("10.1.2.0/23", "0.0.1.255"),
     ("10.1.2.3/32", "0.0.0.0"), ("0.0.0.0/0", "255.255.255.255")],
)  # fmt: skip
def test_cisco_ios_wildcard_masks(prefix: str, wildcard: str) -> None:
    link = Link("v", LinkKind.VENDOR, "gw", ipaddress.IPv4Network(prefix), interface="Gi0/1")
    lines = render("cisco_ios", "cut-link", {"cut_link_method": "acl"}, link=link)
    assert f"deny ip {prefix.split('/')[0]} {wildcard} any" in lines


@pytest.mark.parametrize("platform", ["cisco_nxos", "arista_eos"])
def test_nxos_and_eos_cut_with_an_acl_and_isolate_with_shutdown(platform: str) -> None:
    lines = render(platform, "cut-link")
    assert "ip access-list ORCH-CUT-vendor-registration" in lines
    assert "10 deny ip 10.200.0.0/24 any" in lines
    assert "20 deny ip any 10.200.0.0/24" in lines
    assert "ip access-group ORCH-CUT-vendor-registration in" in lines
    assert render(platform, "cut-link", {"cut_link_method": "shutdown"}) == ["interface vendor0", "shutdown"]
    assert "no ip access-list ORCH-CUT-vendor-registration" in render(platform, "restore-link")
    assert render(platform, "isolate-segment") == ["interface vlan120", "shutdown"]


def test_junos_set_commands() -> None:
    assert render("juniper_junos", "isolate-segment") == ["set interfaces vlan120 unit 0 disable"]
    sub = Segment("s", ipaddress.IPv4Network("10.1.0.0/24"), "z", gateway="gw", interface="ge-0/0/1.120")
    assert render("juniper_junos", "reconnect-segment", segment=sub) == ["delete interfaces ge-0/0/1 unit 120 disable"]
    cut = render("juniper_junos", "cut-link")
    assert "set firewall family inet filter ORCH-CUT-vendor-registration term peer-in then discard" in cut
    assert "set interfaces vendor0 unit 0 family inet filter input ORCH-CUT-vendor-registration" in cut
    assert render("juniper_junos", "restore-link")[-1] == (
        "delete firewall family inet filter ORCH-CUT-vendor-registration"
    )


def test_fortinet_interface_status() -> None:
    assert render("fortinet", "isolate-segment") == [
        "config system interface", 'edit "vlan120"', "set status down", "next", "end"
    ]  # fmt: skip
    assert "set status up" in render("fortinet", "restore-link")


def test_panos_security_rules_both_ways_moved_to_top() -> None:
    lines = render("paloalto_panos", "isolate-segment")
    assert any(
        line.startswith("set rulebase security rules orch-iso-ant-servers from any to any source 10.10.2.0/24")
        and line.endswith(f'action deny description "{ISO}"')
        for line in lines
    )
    assert "move rulebase security rules orch-iso-ant-servers top" in lines
    assert render("paloalto_panos", "restore-link") == [
        "delete rulebase security rules orch-cut-vendor-registration",
        "delete rulebase security rules orch-cut-vendor-registration-out",
    ]


# -- context checks ------------------------------------------------------------------------------


@pytest.mark.parametrize("platform", [p for p in devices.PLATFORMS if p != "paloalto_panos"])
def test_isolating_needs_the_segment_interface(platform: str) -> None:
    bare = Segment("ant-servers", ipaddress.IPv4Network("10.10.2.0/24"), "servers", gateway="gw")
    with pytest.raises(DriverError) as err:
        render(platform, "isolate-segment", segment=bare)
    assert err.value.hint == "set segments.ant-servers.interface in the inventory"


def test_interface_names_that_a_shell_would_misread_are_refused() -> None:
    evil = Segment("s", ipaddress.IPv4Network("10.1.0.0/24"), "z", gateway="gw", interface="eth1'; reboot")
    with pytest.raises(DriverError, match="misread"):
        render("linux", "isolate-segment", segment=evil)


def test_device_platform_must_match() -> None:
    with pytest.raises(DriverError, match="is linux, not cisco_ios"):
        devices.render("cisco_ios", "show", device=device("linux"))


def test_change_needs_its_target() -> None:
    with pytest.raises(DriverError, match="needs a segment"):
        devices.render("linux", "isolate-segment")


# -- reading a running config --------------------------------------------------------------------

FRR_RUNNING = """\
Building configuration...

Current configuration:
!
frr version 8.4.4
hostname ant-core
!
interface vlan120
 shutdown
exit
!
interface vlan130
 description clinical
exit
!
end
"""


def test_in_force_linux_reads_the_marker() -> None:
    ruleset = f'table inet orchestrator {{\n chain forward {{\n  iifname "vlan120" drop comment "{ISO}"\n }}\n}}'
    assert devices.in_force("linux", "isolate-segment", ruleset, segment=SEGMENT)
    assert not devices.in_force("linux", "reconnect-segment", ruleset, segment=SEGMENT)
    assert not devices.in_force("linux", "cut-link", ruleset, link=LINK)
    other = Segment("ant-servers2", SEGMENT.subnet, "z", gateway="gw", interface="vlan121")
    assert not devices.in_force("linux", "isolate-segment", ruleset.replace(ISO, ISO + "x"), segment=other)


def test_in_force_frr_reads_the_interface_block() -> None:
    assert devices.in_force("cisco_ios", "isolate-segment", FRR_RUNNING, segment=SEGMENT)
    clinical = Segment("ant-clinical", ipaddress.IPv4Network("10.10.3.0/24"), "c", gateway="gw", interface="vlan130")
    assert not devices.in_force("cisco_ios", "isolate-segment", FRR_RUNNING, segment=clinical)
    assert devices.in_force("cisco_ios", "reconnect-segment", FRR_RUNNING, segment=clinical)
    assert not devices.in_force("cisco_ios", "cut-link", FRR_RUNNING, link=LINK)


def test_in_force_acl_and_vendor_configs() -> None:
    ios = "interface vendor0\n ip access-group ORCH-CUT-vendor-registration in\n!\n"
    acl = device("cisco_ios", cut_link_method="acl")
    assert devices.in_force("cisco_ios", "cut-link", ios, device=acl, link=LINK)
    assert devices.in_force("arista_eos", "cut-link", ios, device=device("arista_eos"), link=LINK)
    junos = "set interfaces vlan120 unit 0 disable\nset interfaces vendor0 unit 0 family inet filter input "
    junos += "ORCH-CUT-vendor-registration\n"
    assert devices.in_force("juniper_junos", "isolate-segment", junos, segment=SEGMENT)
    assert devices.in_force("juniper_junos", "cut-link", junos, link=LINK)
    forti = 'config system interface\n    edit "vlan120"\n        set status down\n    next\nend\n'
    assert devices.in_force("fortinet", "isolate-segment", forti, segment=SEGMENT)
    assert not devices.in_force("fortinet", "cut-link", forti, link=LINK)
    panos = "rules {\n orch-cut-vendor-registration-out {\n"
    assert devices.in_force("paloalto_panos", "cut-link", panos, link=LINK)
    assert not devices.in_force("paloalto_panos", "isolate-segment", panos, segment=SEGMENT)
    shorter = Link("vendor", LinkKind.VENDOR, "gw", LINK.peer)
    assert not devices.in_force("paloalto_panos", "cut-link", panos, link=shorter)


def test_restore_commands_ios_bring_up_only_what_was_up_in_the_backup() -> None:
    backup = "interface vlan120\n description servers\nexit\ninterface vlan140\n shutdown\nexit\n"
    running = (
        "interface vlan120\n shutdown\nexit\ninterface vlan140\n shutdown\nexit\n"
        "interface vendor0\n ip access-group ORCH-CUT-vendor-registration in\nexit\n"
        "ip access-list extended ORCH-CUT-vendor-registration\n"
    )
    assert devices.restore_commands("cisco_ios", backup, running) == [
        "interface vlan120",
        "no shutdown",
        "interface vendor0",
        "no ip access-group ORCH-CUT-vendor-registration in",
        "no ip access-list extended ORCH-CUT-vendor-registration",
    ]
    assert devices.restore_commands("linux", "", "") == [
        "if nft list table inet orchestrator >/dev/null 2>&1; then nft delete table inet orchestrator; fi"
    ]
    with pytest.raises(DriverError, match="not automated"):
        devices.restore_commands("fortinet", "", "")
