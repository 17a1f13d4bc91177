"""bench/generate_inventory.py: deterministic, valid (warning-free under --strict), shaped as asked.

Also checks inventories/example-hospital.yml, the hand-written example that teaches the format.
"""

from __future__ import annotations

import graphlib
import importlib.util
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

from orchestrator.inventory import validate_file, validate_text
from orchestrator.lab.topology import MAX_IFNAME, topology
from orchestrator.model import Inventory, LinkKind

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "bench" / "generate_inventory.py"
EXAMPLE = ROOT / "inventories" / "example-hospital.yml"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_inventory", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("generate_inventory", module)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
generate: Callable[..., str] = gen.generate


@cache
def _load(hosts: int, lab: bool = False, depth: int = 4) -> Inventory:
    result = validate_text(generate(hosts, lab=lab, depth=depth), f"generated-{hosts}.yml", strict=True)
    assert result.warnings == ()
    return result.inventory


def _depth(inv: Inventory) -> int:
    """Number of hosts on the longest dependency chain."""
    longest: dict[str, int] = {}
    order = graphlib.TopologicalSorter({h.name: h.depends_on for h in inv.hosts.values()}).static_order()
    for name in order:
        longest[name] = 1 + max((longest[d] for d in inv.hosts[name].depends_on), default=0)
    return max(longest.values())


def _kept(inv: Inventory) -> set[str]:
    return set(inv.keep_reasons())


# -- determinism ----------------------------------------------------------------------------------


@pytest.mark.parametrize("lab", [False, True])
def test_same_arguments_give_the_same_bytes(lab: bool) -> None:
    assert generate(100, lab=lab) == generate(100, lab=lab)
    assert generate(100, seed=7, lab=lab) == generate(100, seed=7, lab=lab)


def test_another_seed_gives_other_dependencies_but_the_same_machines() -> None:
    a, b = _load(100), validate_text(generate(100, seed=1), "b.yml", strict=True).inventory
    assert generate(100) != generate(100, seed=1)
    assert set(a.hosts) == set(b.hosts)
    assert [h.depends_on for h in a.hosts.values()] != [h.depends_on for h in b.hosts.values()]


def test_cli_writes_what_generate_returns(tmp_path: Path) -> None:
    out = tmp_path / "inv.yml"
    assert gen.main(["--hosts", "50", "--lab", "--seed", "3", "-o", str(out)]) == 0
    assert out.read_text() == generate(50, seed=3, lab=True)


# -- plain inventories ----------------------------------------------------------------------------


@pytest.mark.parametrize("hosts", [100, 5000])
def test_plain_inventory_loads_strictly_without_warnings(hosts: int) -> None:
    inv = _load(hosts)
    assert len(inv.hosts) == hosts
    assert set(inv.campuses) == {"antwerp", "deurne"}
    assert inv.lab is None
    assert all(h.power is None for h in inv.hosts.values())


@pytest.mark.parametrize("hosts", [100, 5000])
def test_shape_is_what_the_benchmark_asks_for(hosts: int) -> None:
    inv = _load(hosts)
    assert _depth(inv) == 4
    assert {h.tier for h in inv.hosts.values()} == {0, 1, 2, 3}
    # four gateways, both platforms, every one isolating at least one segment
    assert len(inv.devices) == 4
    assert {d.platform for d in inv.devices.values()} == {"cisco_ios", "linux"}
    assert {s.gateway for s in inv.segments.values() if s.gateway} == set(inv.devices)
    # one firewall carries a vendor and an internet link
    kinds = {(lk.kind, lk.device) for lk in inv.links.values()}
    assert kinds == {(LinkKind.VENDOR, "ant-fw"), (LinkKind.INTERNET, "ant-fw")}
    assert inv.devices["ant-fw"].role == "firewall"
    # an emergency-department island on each campus, about a tenth of the hosts
    ed = [s for s in inv.segments.values() if s.zone == "emergency"]
    assert {s.campus for s in ed} == {"antwerp", "deurne"}
    assert set(inv.islands["emergency-department"].segments) == {s.name for s in ed}
    assert len(_kept(inv)) == hosts // 10
    # hosts spread over segments, none over a /24's worth
    per_segment = [len(inv.hosts_in_segment(s)) for s in inv.segments if s != inv.management_segment]
    assert max(per_segment) <= 200
    assert sum(1 for n in per_segment if n) >= 10


def test_hosts_of_later_campuses_also_depend_on_the_first() -> None:
    inv = _load(100)
    assert any(
        inv.hosts[d].campus == "antwerp" for h in inv.hosts.values() if h.campus == "deurne" for d in h.depends_on
    )


@pytest.mark.parametrize(("hosts", "campuses", "depth"), [(1, 1, 1), (3, 2, 4), (7, 3, 6), (250, 5, 2)])
def test_odd_sizes_still_load_strictly(hosts: int, campuses: int, depth: int) -> None:
    inv = validate_text(generate(hosts, campuses=campuses, depth=depth), "odd.yml", strict=True).inventory
    assert len(inv.hosts) == hosts
    assert len(inv.campuses) == campuses
    assert 1 <= _depth(inv) <= depth


@pytest.mark.parametrize("kwargs", [{"hosts": 0}, {"hosts": 10, "campuses": 9}, {"hosts": 10, "depth": 0}])
def test_impossible_sizes_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        generate(**kwargs)


# -- lab inventories ------------------------------------------------------------------------------


def test_lab_inventory_is_one_the_lab_can_wire() -> None:
    inv = _load(100, lab=True)
    assert inv.lab is not None
    assert set(inv.lab.peers) == set(inv.links)
    assert all(h.power == "lab" for h in inv.hosts.values())
    topo = topology(inv)  # raises LabError naming every reason it could not be a lab
    assert len([m for m in topo.machines if m.kind == "host"]) == 100
    assert len([m for m in topo.machines if m.kind == "device"]) == 4
    assert len([m for m in topo.machines if m.kind == "peer"]) == 2
    assert all(len(i.name) <= MAX_IFNAME for m in topo.machines for i in m.interfaces)


def test_lab_inventory_follows_the_lab_conventions() -> None:
    inv = _load(100, lab=True)
    lab_yml = ROOT / "inventories" / "lab.yml"
    lab = validate_file(lab_yml).inventory if lab_yml.exists() else None
    for cred in inv.credentials.values():
        assert cred.key_file and cred.known_hosts and cred.password_env is None
        if lab is not None:
            assert cred.key_file in {c.key_file for c in lab.credentials.values()}
    for dev in inv.devices.values():
        expected_user = "netops" if dev.platform == "cisco_ios" else "root"
        assert inv.credentials[dev.credentials].username == expected_user
    for host in inv.hosts.values():
        assert inv.credentials[host.credentials].username == "root"
        assert "ssh" in host.services


# -- the example hospital -------------------------------------------------------------------------


def test_example_hospital_is_valid_and_warning_free_under_strict() -> None:
    result = validate_file(EXAMPLE, strict=True)
    inv = result.inventory
    assert result.warnings == ()
    assert len(inv.hosts) >= 80
    assert set(inv.campuses) == {"antwerp", "deurne"}
    assert inv.lab is None
    assert all(h.power in (None, "ipmi", "manual") for h in inv.hosts.values())


def test_example_hospital_has_the_roles_a_hospital_needs() -> None:
    inv = validate_file(EXAMPLE, strict=True).inventory
    roles = {h.role for h in inv.hosts.values()}
    for role in (
        "identity",
        "dns-dhcp",
        "storage-san",
        "storage-nas",
        "emr-database",
        "pacs-database",
        "emr-application",
        "patient-portal",
        "pacs",
        "ris",
        "laboratory",
        "pharmacy",
        "patient-registration",
        "printing",
        "backup",
        "monitoring",
        "jump-host",
    ):
        assert role in roles, role
    assert {lk.kind for lk in inv.links.values()} == {LinkKind.VENDOR, LinkKind.INTERNET, LinkKind.WAN}
    assert {"cisco_ios", "cisco_nxos", "arista_eos", "fortinet", "paloalto_panos", "linux"} <= {
        d.platform for d in inv.devices.values()
    }
    assert set(inv.islands) == {"emergency-department", "intensive-care"}
    assert all(island.hosts for island in inv.islands.values())
    assert any(h.keep_running for h in inv.hosts.values())
    kept = _kept(inv)
    assert all(dep in kept for name in kept for dep in inv.hosts[name].depends_on)
    # references only: no credential carries anything but paths and variable names
    for cred in inv.credentials.values():
        assert cred.key_file or cred.password_env or cred.password_file
