"""The import's decisions, as pure logic: names, an address's segment, a guest's OS family, folder
mappings. Each undecidable case must come back as a TODO with its reason, never as a guess."""

from __future__ import annotations

import ipaddress

from ruamel.yaml.comments import CommentedMap

from orchestrator.onboarding.assign import inventory_name, ipv4s, place
from orchestrator.onboarding.base import Base, SegmentInfo
from orchestrator.onboarding.mapping import Mapping
from orchestrator.onboarding.vsphere_import import os_family

BASE = Base(path="hospital.yml", doc=CommentedMap(), management_segment="mgmt", segments=[
    SegmentInfo("mgmt", ipaddress.IPv4Network("10.99.0.0/16")),
    SegmentInfo("servers", ipaddress.IPv4Network("10.10.2.0/24"), campus="antwerp"),
    SegmentInfo("clinical", ipaddress.IPv4Network("10.10.3.0/24"), campus="antwerp"),
])


def ips(*texts: str) -> list[ipaddress.IPv4Address]:
    return ipv4s(texts)


def test_names_are_lowercased_and_cleaned() -> None:
    assert inventory_name("EMR_DB1.example.org") == "emr-db1-example-org"
    assert inventory_name("  PACS (old)  ") == "pacs-old"
    assert inventory_name("???") == ""


def test_ipv6_link_local_and_loopback_are_not_addresses_of_a_host() -> None:
    assert ips("fe80::1%eth0", "169.254.3.4", "127.0.0.1", "10.10.2.5", "10.10.2.5", "x") == \
        [ipaddress.IPv4Address("10.10.2.5")]


def test_one_address_in_one_segment_is_placed_and_a_management_one_kept_apart() -> None:
    where = place(BASE, ips("10.99.20.5", "10.10.2.5"))
    assert (where.segment, where.address, where.management_address, where.campus, where.todo) == \
        ("servers", "10.10.2.5", "10.99.20.5", "antwerp", None)


def test_what_cannot_be_decided_is_a_todo_with_its_reason() -> None:
    assert "no IPv4 address" in str(place(BASE, []).todo)
    stray = place(BASE, ips("172.16.0.9"))
    assert stray.segment is None and "172.16.0.9 in no segment" in str(stray.todo)
    both = place(BASE, ips("10.10.2.5", "10.10.3.5"))
    assert both.address is None and "several segments" in str(both.todo)
    two = place(BASE, ips("10.10.2.5", "10.10.2.6"))
    assert two.address is None and "choose one" in str(two.todo)
    assert place(BASE, ips("10.10.2.5", "10.10.2.6"), ipaddress.IPv4Address("10.10.2.6")).address == "10.10.2.6"
    assert "only on the management segment" in str(place(BASE, ips("10.99.1.1")).todo)


def test_the_os_family_comes_from_tools_then_the_guest_id_else_it_is_unknown() -> None:
    assert os_family("windowsGuest", "otherGuest64") == "windows"
    assert os_family(None, "windows2019srv_64Guest") == "windows"
    assert os_family(None, "rhel8_64Guest") == "linux"
    assert os_family("otherGuestFamily", "otherGuest64") is None
    assert os_family(None, None) is None


def test_folders_map_by_longest_prefix_key_by_key() -> None:
    mapping = Mapping(folders={"Antwerp": {"campus": "antwerp", "role": "server"},
                               "Antwerp/PACS": {"role": "pacs"}})
    assert mapping.for_folder("Antwerp/PACS/old") == {"campus": "antwerp", "role": "pacs"}
    assert mapping.for_folder("Antwerpen") == {}
