"""The inventory loader: every refusal names the file, the line and the key path, and says how to fix it.

Each test starts from BASE (valid, warning-free, one key per line so line numbers are exact), makes one
edit, and asserts the problem's key path and line, and that the rendered error carries both.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from orchestrator.errors import InventoryError, Problem
from orchestrator.inventory import find_cycles, load_inventory, validate_file, validate_text
from orchestrator.model import LinkKind

FILE = "inv.yml"

BASE = """\
version: 1
site:
  name: test-hospital
  timezone: Europe/Brussels
management:
  segment: mgmt
campuses:
  antwerp: {}
  deurne: {}
segments:
  mgmt:
    subnet: 10.99.0.0/16
    zone: management
  ant-servers:
    campus: antwerp
    subnet: 10.10.2.0/24
    zone: servers
    gateway: ant-core
  ant-ed:
    campus: antwerp
    subnet: 10.10.5.0/24
    zone: emergency
    gateway: ant-core
devices:
  ant-core:
    campus: antwerp
    platform: linux
    address: 10.99.0.2
    role: core
    credentials: lab
  ant-fw:
    campus: antwerp
    platform: linux
    address: 10.99.0.3
    role: firewall
    credentials: lab
links:
  vendor-registration:
    kind: vendor
    device: ant-fw
    peer: 10.200.0.0/24
hosts:
  ant-ad1:
    campus: antwerp
    segment: ant-servers
    address: 10.10.2.10
    management_address: 10.99.2.10
    tier: 0
    credentials: lab
  ant-db1:
    segment: ant-servers
    address: 10.10.2.11
    management_address: 10.99.2.11
    tier: 1
    depends_on: [ant-ad1]
    credentials: lab
  ant-app1:
    segment: ant-servers
    address: 10.10.2.12
    management_address: 10.99.2.12
    tier: 2
    depends_on: [ant-db1]
    credentials: lab
  ant-ed1:
    segment: ant-ed
    address: 10.10.5.20
    management_address: 10.99.5.20
    tier: 2
    credentials: lab
islands:
  emergency-department:
    segments: [ant-ed]
    reason: ED keeps operating at reduced capacity
credentials:
  lab:
    username: root
    key_file: ~/.ssh/orchestrator_lab
"""


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def edit(text: str, old: str, new: str) -> str:
    """Replace ``old`` (which must occur exactly once) with ``new``."""
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
    return text.replace(old, new)


def line_of(text: str, snippet: str, occurrence: int = 1, *, exact: bool = False) -> int:
    """1-based line number of the ``occurrence``-th line containing (or, if exact, equal to) ``snippet``."""
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if (line == snippet) if exact else (snippet in line):
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{snippet!r} not found")


def refusal(text: str, *, strict: bool = False) -> InventoryError:
    with pytest.raises(InventoryError) as info:
        validate_text(text, FILE, strict=strict)
    return info.value


def errors_of(text: str, *, strict: bool = False) -> list[Problem]:
    return [p for p in refusal(text, strict=strict).problems if p.severity == "error"]


def the_problem(text: str, key: str, line: int, *words: str, strict: bool = False) -> Problem:
    """Assert exactly one error at ``key``/``line`` whose message has ``words``; check its rendering."""
    exc = refusal(text, strict=strict)
    errors = [p for p in exc.problems if p.severity == "error"]
    matching = [p for p in errors if p.key == key and all(word in p.message for word in words)]
    assert len(matching) == 1, f"expected one error at {key}, got: {[p.render() for p in errors]}"
    problem = matching[0]
    assert problem.file == FILE
    assert problem.line == line, problem.render()
    for word in words:
        assert word in problem.message, problem.render()
    assert problem.hint, "every problem says how to fix it"
    assert f"{FILE}:{line}: {key}: " in str(exc), str(exc)
    return problem


# --------------------------------------------------------------------------------------------
# the base is valid
# --------------------------------------------------------------------------------------------


def test_base_is_valid_and_warning_free() -> None:
    result = validate_text(BASE, FILE)
    assert result.warnings == ()
    inv = result.inventory
    assert inv.management_segment == "mgmt"
    assert set(inv.hosts) == {"ant-ad1", "ant-db1", "ant-app1", "ant-ed1"}
    assert inv.hosts["ant-db1"].depends_on == ("ant-ad1",)
    assert inv.hosts["ant-db1"].campus == "antwerp", "campus is inherited from the segment"
    assert inv.hosts["ant-ad1"].management_address == ipaddress.IPv4Address("10.99.2.10")
    assert inv.links["vendor-registration"].kind is LinkKind.VENDOR
    assert inv.keep_reasons() == {"ant-ed1": "island emergency-department: ED keeps operating at reduced capacity"}


def test_management_address_defaults_to_address() -> None:
    text = edit(BASE, "    management_address: 10.99.2.12\n", "")
    result = validate_text(text, FILE)
    assert result.inventory.hosts["ant-app1"].management_address == ipaddress.IPv4Address("10.10.2.12")
    # ... and the loader warns that the host cannot be reached once its segment is isolated
    assert [w.key for w in result.warnings] == ["hosts.ant-app1"]


def test_sha256_is_of_the_file_bytes(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "inv.yml"
    path.write_text(BASE, encoding="utf-8")
    assert load_inventory(path).sha256 == hashlib.sha256(BASE.encode()).hexdigest()


def test_small_sample_is_valid_with_one_kept_host_warning(small_inventory_path: Path) -> None:
    result = validate_file(small_inventory_path)
    assert [(w.key, w.severity) for w in result.warnings] == [("hosts.ant-ed-triage1.depends_on[0]", "warning")]


# --------------------------------------------------------------------------------------------
# unknown keys
# --------------------------------------------------------------------------------------------


def test_unknown_top_level_key() -> None:
    text = edit(BASE, "version: 1\n", "version: 1\ncolour: blue\n")
    p = the_problem(text, "colour", 2, "unknown key 'colour'")
    assert "hosts" in p.hint, "the hint lists the allowed keys"


def test_unknown_key_in_a_host() -> None:
    text = edit(BASE, "    tier: 0\n", "    tier: 0\n    adress: 10.10.2.99\n")
    p = the_problem(text, "hosts.ant-ad1.adress", line_of(text, "adress:"), "unknown key 'adress'")
    assert "address" in p.hint


def test_unknown_key_in_a_segment() -> None:
    text = edit(BASE, "    zone: emergency\n", "    zone: emergency\n    vlann: 150\n")
    the_problem(text, "segments.ant-ed.vlann", line_of(text, "vlann:"), "unknown key")


def test_password_in_credentials_is_refused_with_the_secrets_hint_and_never_echoed() -> None:
    text = edit(BASE, "    username: root\n", "    username: root\n    password: hunter2-s3cret\n")
    exc = refusal(text)
    p = the_problem(text, "credentials.lab.password", line_of(text, "password:"), "unknown key 'password'")
    assert "password_env" in p.hint and "secret" in p.hint
    assert "hunter2-s3cret" not in str(exc)
    assert all("hunter2-s3cret" not in str(q.as_dict()) for q in exc.problems)


# --------------------------------------------------------------------------------------------
# duplicate keys
# --------------------------------------------------------------------------------------------


def test_duplicate_top_level_key() -> None:
    text = edit(BASE, "management:\n  segment: mgmt\n", "management:\n  segment: mgmt\nversion: 1\n")
    p = the_problem(text, "version", line_of(text, "version: 1", 2), "duplicate key 'version'")
    assert "line 1" in p.message, "names where the first one is"


def test_the_same_host_twice() -> None:
    again = "  ant-ad1:\n    segment: ant-ed\n    address: 10.10.5.10\n    credentials: lab\n"
    text = edit(BASE, "islands:\n", again + "islands:\n")
    first = line_of(text, "  ant-ad1:")
    p = the_problem(text, "hosts.ant-ad1", line_of(text, "  ant-ad1:", 2), "duplicate key 'ant-ad1'")
    assert f"line {first}" in p.message


def test_duplicate_key_inside_a_host() -> None:
    text = edit(BASE, "    tier: 1\n", "    tier: 1\n    tier: 0\n")
    the_problem(text, "hosts.ant-db1.tier", line_of(text, "tier: 0", 2), "duplicate key 'tier'")


def test_duplicate_key_in_a_flow_mapping() -> None:
    text = edit(BASE, "  antwerp: {}\n", "  antwerp: {description: a, description: b}\n")
    the_problem(text, "campuses.antwerp.description", line_of(text, "description: a"), "duplicate key")


# --------------------------------------------------------------------------------------------
# unknown references
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "key", "words"),
    [
        ("    segment: ant-ed\n", "    segment: ant-lab\n", "hosts.ant-ed1.segment", ("segment 'ant-lab'",)),
        (
            "    zone: emergency\n    gateway: ant-core\n",
            "    zone: emergency\n    gateway: ant-corr\n",
            "segments.ant-ed.gateway",
            ("device 'ant-corr'",),
        ),
        ("    device: ant-fw\n", "    device: ant-fw2\n", "links.vendor-registration.device", ("device 'ant-fw2'",)),
        (
            "    tier: 2\n    credentials: lab\n",
            "    tier: 2\n    credentials: labb\n",
            "hosts.ant-ed1.credentials",
            ("credential 'labb'",),
        ),
        (
            "    role: firewall\n    credentials: lab\n",
            "    role: firewall\n    credentials: vault\n",
            "devices.ant-fw.credentials",
            ("credential 'vault'",),
        ),
        (
            "    depends_on: [ant-db1]\n",
            "    depends_on: [ant-db2]\n",
            "hosts.ant-app1.depends_on[0]",
            ("host 'ant-db2'",),
        ),
        (
            "    segments: [ant-ed]\n",
            "    segments: [ant-er]\n",
            "islands.emergency-department.segments[0]",
            ("segment 'ant-er'",),
        ),
        (
            "    segments: [ant-ed]\n",
            "    segments: [ant-ed]\n    hosts: [ant-icu1]\n",
            "islands.emergency-department.hosts[0]",
            ("host 'ant-icu1'",),
        ),
        (
            "  ant-ad1:\n    campus: antwerp\n",
            "  ant-ad1:\n    campus: berchem\n",
            "hosts.ant-ad1.campus",
            ("campus 'berchem'",),
        ),
        (
            "  ant-ed:\n    campus: antwerp\n",
            "  ant-ed:\n    campus: mortsel\n",
            "segments.ant-ed.campus",
            ("campus 'mortsel'",),
        ),
        (
            "  ant-fw:\n    campus: antwerp\n",
            "  ant-fw:\n    campus: wilrijk\n",
            "devices.ant-fw.campus",
            ("campus 'wilrijk'",),
        ),
    ],
    ids=[
        "host-segment",
        "segment-gateway",
        "link-device",
        "host-credentials",
        "device-credentials",
        "depends_on",
        "island-segment",
        "island-host",
        "host-campus",
        "segment-campus",
        "device-campus",
    ],
)
def test_unknown_reference(old: str, new: str, key: str, words: tuple[str, ...]) -> None:
    text = edit(BASE, old, new)
    changed = next(line for line in new.splitlines() if line not in old.splitlines())
    p = the_problem(text, key, line_of(text, changed), "unknown", *words)
    assert "use one of" in p.hint or "define it" in p.hint


def test_unknown_campus_hint_names_the_campuses_section() -> None:
    text = edit(BASE, "  ant-fw:\n    campus: antwerp\n", "  ant-fw:\n    campus: wilrijk\n")
    p = the_problem(text, "devices.ant-fw.campus", line_of(text, "wilrijk"), "unknown campus")
    assert "'campuses:'" in p.hint and "antwerp, deurne" in p.hint


def test_unknown_reference_hint_lists_the_known_names() -> None:
    text = edit(BASE, "    segment: ant-ed\n", "    segment: ant-lab\n")
    p = the_problem(text, "hosts.ant-ed1.segment", line_of(text, "ant-lab"), "unknown segment")
    assert "ant-ed" in p.hint and "ant-servers" in p.hint and "mgmt" in p.hint


# --------------------------------------------------------------------------------------------
# addresses and subnets
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("    address: 10.10.2.11\n", "    address: 10.10.2.300\n", "hosts.ant-db1.address"),
        ("    address: 10.10.2.11\n", "    address: ant-db1.example\n", "hosts.ant-db1.address"),
        (
            "    management_address: 10.99.2.11\n",
            "    management_address: 10.99.2\n",
            "hosts.ant-db1.management_address",
        ),
        ("    address: 10.99.0.3\n", "    address: 10.99.0.256\n", "devices.ant-fw.address"),
    ],
    ids=["octet-too-big", "a-name", "three-octets", "device"],
)
def test_malformed_address(old: str, new: str, key: str) -> None:
    text = edit(BASE, old, new)
    the_problem(text, key, line_of(text, new.rstrip("\n"), exact=True), "is not an IPv4 address")


@pytest.mark.parametrize(
    ("old", "new", "key", "hint_word"),
    [
        ("    subnet: 10.10.5.0/24\n", "    subnet: 10.10.5.0/33\n", "segments.ant-ed.subnet", "CIDR"),
        ("    subnet: 10.10.5.0/24\n", "    subnet: 10.10.5.1/24\n", "segments.ant-ed.subnet", "10.10.5.0/24"),
        ("    subnet: 10.10.5.0/24\n", "    subnet: ten-ten\n", "segments.ant-ed.subnet", "CIDR"),
        ("    peer: 10.200.0.0/24\n", "    peer: 10.200.0.0/99\n", "links.vendor-registration.peer", "CIDR"),
    ],
    ids=["prefix-too-long", "host-bits-set", "not-a-network", "link-peer"],
)
def test_malformed_subnet(old: str, new: str, key: str, hint_word: str) -> None:
    text = edit(BASE, old, new)
    p = the_problem(text, key, line_of(text, new.rstrip("\n"), exact=True), "is not an IPv4 network")
    assert hint_word in p.hint


def test_address_outside_its_segment() -> None:
    text = edit(BASE, "    address: 10.10.2.11\n", "    address: 10.10.3.11\n")
    the_problem(
        text,
        "hosts.ant-db1.address",
        line_of(text, "10.10.3.11"),
        "10.10.3.11",
        "outside",
        "ant-servers",
        "10.10.2.0/24",
    )


def test_management_address_outside_management() -> None:
    text = edit(BASE, "    management_address: 10.99.2.11\n", "    management_address: 10.98.2.11\n")
    the_problem(
        text,
        "hosts.ant-db1.management_address",
        line_of(text, "10.98.2.11"),
        "10.98.2.11",
        "outside the management segment",
        "10.99.0.0/16",
    )


def test_an_address_used_twice() -> None:
    text = edit(BASE, "    management_address: 10.99.2.11\n", "    management_address: 10.99.2.10\n")
    the_problem(
        text,
        "hosts.ant-db1.management_address",
        line_of(text, "management_address: 10.99.2.10", 2),
        "already used by host ant-ad1",
    )


def test_overlapping_subnets() -> None:
    text = edit(BASE, "    subnet: 10.10.5.0/24\n", "    subnet: 10.10.0.0/16\n")
    errors = errors_of(text)
    overlap = [p for p in errors if "overlaps" in p.message]
    assert len(overlap) == 1
    assert overlap[0].key in ("segments.ant-ed.subnet", "segments.ant-servers.subnet")
    assert overlap[0].line == line_of(
        text, f"subnet: {'10.10.2.0/24' if 'servers' in overlap[0].key else '10.10.0.0/16'}"
    )


# --------------------------------------------------------------------------------------------
# dependencies and tiers
# --------------------------------------------------------------------------------------------


def test_three_host_cycle_names_every_host_on_it() -> None:
    # ant-ad1 -> ant-app1 -> ant-db1 -> ant-ad1, all on one tier so only the cycle is wrong
    text = edit(
        BASE, "    tier: 0\n    credentials: lab\n", "    tier: 2\n    depends_on: [ant-app1]\n    credentials: lab\n"
    )
    text = edit(text, "    tier: 1\n", "    tier: 2\n")
    errors = errors_of(text)
    cycles = [p for p in errors if "cycle" in p.message]
    assert len(cycles) == 1, [p.render() for p in errors]
    p = cycles[0]
    for host in ("ant-ad1", "ant-db1", "ant-app1"):
        assert host in p.message
    assert "ant-ed1" not in p.message
    assert p.key == "hosts.ant-ad1.depends_on"
    assert p.line == line_of(text, "depends_on: [ant-app1]")
    assert errors == cycles, "a consistent-tier cycle is the only error"


def test_two_separate_cycles_are_both_reported() -> None:
    text = edit(
        BASE, "    tier: 0\n    credentials: lab\n", "    tier: 1\n    depends_on: [ant-db1]\n    credentials: lab\n"
    )
    text = edit(
        text, "    tier: 2\n    credentials: lab\n", "    tier: 2\n    depends_on: [ant-app1]\n    credentials: lab\n"
    )
    text = edit(
        text,
        "    depends_on: [ant-db1]\n    credentials: lab\n  ant-ed1:",
        "    depends_on: [ant-db1, ant-ed1]\n    credentials: lab\n  ant-ed1:",
    )
    cycles = [p for p in errors_of(text) if "cycle" in p.message]
    assert sorted(p.message for p in cycles) == [
        "dependency cycle between hosts ant-ad1, ant-db1",
        "dependency cycle between hosts ant-app1, ant-ed1",
    ]


def test_self_dependency() -> None:
    text = edit(BASE, "    depends_on: [ant-db1]\n", "    depends_on: [ant-db1, ant-app1]\n")
    the_problem(text, "hosts.ant-app1.depends_on[1]", line_of(text, "[ant-db1, ant-app1]"), "depends on itself")


def test_find_cycles() -> None:
    assert find_cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert find_cycles({"a": ["a"]}) == [["a"]]
    assert find_cycles({"a": ["b"], "b": [], "c": ["x"]}) == []
    assert find_cycles({"b": ["a"], "a": ["b"], "c": ["d"], "d": ["c"]}) == [["a", "b"], ["c", "d"]]


def test_find_cycles_handles_a_long_chain_without_recursion() -> None:
    n = 5000
    graph = {f"h{i}": [f"h{i + 1}"] for i in range(n)}
    graph[f"h{n}"] = ["h0"]
    cycles = find_cycles(graph)
    assert len(cycles) == 1 and len(cycles[0]) == n + 1


def test_tier_lower_than_a_dependency() -> None:
    text = edit(BASE, "    tier: 1\n", "    tier: 3\n")  # ant-db1 now tier 3; ant-app1 (tier 2) depends on it
    p = the_problem(text, "hosts.ant-app1.tier", line_of(text, "tier: 2"), "tier 2 is lower than tier 3", "ant-db1")
    assert "3" in p.hint


def test_equal_tiers_are_fine() -> None:
    text = edit(BASE, "    tier: 1\n", "    tier: 2\n")
    validate_text(text, FILE)


# --------------------------------------------------------------------------------------------
# management
# --------------------------------------------------------------------------------------------


def test_management_segment_that_does_not_exist() -> None:
    text = edit(BASE, "  segment: mgmt\n", "  segment: oob\n")
    p = the_problem(text, "management.segment", line_of(text, "segment: oob"), "'oob'", "not defined")
    assert "mgmt" in p.hint


def test_missing_management_section() -> None:
    text = edit(BASE, "management:\n  segment: mgmt\n", "")
    errors = errors_of(text)
    assert any("management" in p.message and p.key == "(top level)" for p in errors), [p.render() for p in errors]


# --------------------------------------------------------------------------------------------
# kept hosts that depend on hosts a shutdown will stop
# --------------------------------------------------------------------------------------------

ISLAND_DEPENDS = edit(
    BASE, "    tier: 2\n    credentials: lab\n", "    tier: 2\n    depends_on: [ant-ad1]\n    credentials: lab\n"
)


def test_island_member_depending_on_a_stopped_host_is_a_warning_by_default() -> None:
    result = validate_text(ISLAND_DEPENDS, FILE)
    assert len(result.warnings) == 1
    w = result.warnings[0]
    assert w.severity == "warning"
    assert w.key == "hosts.ant-ed1.depends_on[0]"
    assert w.line == line_of(ISLAND_DEPENDS, "depends_on: [ant-ad1]", 2)
    assert "ant-ed1" in w.message and "ant-ad1" in w.message
    assert "ant-ad1" in w.hint


def test_island_member_depending_on_a_stopped_host_is_an_error_when_strict() -> None:
    p = the_problem(
        ISLAND_DEPENDS,
        "hosts.ant-ed1.depends_on[0]",
        line_of(ISLAND_DEPENDS, "depends_on: [ant-ad1]", 2),
        "ant-ed1",
        "ant-ad1",
        strict=True,
    )
    assert p.severity == "error"


def test_keep_running_host_depending_on_a_stopped_host() -> None:
    text = edit(
        BASE,
        "    tier: 2\n    depends_on: [ant-db1]\n",
        "    tier: 2\n    keep_running: true\n    depends_on: [ant-db1]\n",
    )
    result = validate_text(text, FILE)
    assert [(w.key, w.line) for w in result.warnings] == [
        ("hosts.ant-app1.depends_on[0]", line_of(text, "depends_on: [ant-db1]"))
    ]
    assert "ant-app1" in result.warnings[0].message and "ant-db1" in result.warnings[0].message
    the_problem(
        text, "hosts.ant-app1.depends_on[0]", line_of(text, "depends_on: [ant-db1]"), "ant-app1", "ant-db1", strict=True
    )


def test_kept_host_depending_on_a_kept_host_is_fine() -> None:
    text = edit(ISLAND_DEPENDS, "    tier: 0\n", "    tier: 0\n    keep_running: true\n")
    # --strict also wants the interface each linux gateway isolates a segment on
    text = text.replace("    gateway: ant-core\n", "    gateway: ant-core\n    interface: eth1\n")
    assert validate_text(text, FILE, strict=True).warnings == ()


def test_island_by_host_name_counts_as_kept() -> None:
    text = edit(BASE, "    segments: [ant-ed]\n", "    hosts: [ant-app1]\n")
    result = validate_text(text, FILE)
    assert [w.key for w in result.warnings] == ["hosts.ant-app1.depends_on[0]"]
    assert result.inventory.keep_reasons() == {
        "ant-app1": "island emergency-department: ED keeps operating at reduced capacity"
    }


# --------------------------------------------------------------------------------------------
# every error at once; malformed files
# --------------------------------------------------------------------------------------------


def test_five_different_errors_yield_five_problems() -> None:
    text = BASE
    text = edit(text, "version: 1\n", "version: 1\ncolour: blue\n")  # 1 unknown key
    text = edit(text, "    address: 10.10.2.11\n", "    address: 10.10.3.11\n")  # 2 outside segment
    text = edit(text, "    depends_on: [ant-db1]\n", "    depends_on: [ant-db9]\n")  # 3 unknown host
    text = edit(text, "    subnet: 10.10.5.0/24\n", "    subnet: 10.10.5.0/33\n")  # 4 bad subnet
    text = edit(text, "    tier: 1\n", "    tier: 1\n    tier: 1\n")  # 5 duplicate key
    exc = refusal(text)
    errors = [p for p in exc.problems if p.severity == "error"]
    assert sorted(p.key for p in errors) == sorted(
        [
            "colour",
            "hosts.ant-db1.address",
            "hosts.ant-app1.depends_on[0]",
            "segments.ant-ed.subnet",
            "hosts.ant-db1.tier",
        ]
    ), [p.render() for p in errors]
    assert all(p.line for p in errors)
    assert str(exc).startswith(f"5 error(s) in {FILE}")
    assert [p.line for p in exc.problems] == sorted(p.line or 0 for p in exc.problems), "in file order"


def test_invalid_yaml_names_the_line() -> None:
    text = edit(BASE, "    tier: 1\n", "    tier: [1\n")
    exc = refusal(text)
    assert len(exc.problems) == 1
    assert exc.problems[0].key == "(yaml)"
    assert exc.problems[0].line is not None and exc.problems[0].line >= line_of(text, "tier: [1")


def test_empty_file() -> None:
    exc = refusal("# nothing here\n")
    assert [p.key for p in exc.problems] == ["(top level)"]


def test_top_level_must_be_a_mapping() -> None:
    exc = refusal("- a\n- b\n")
    assert exc.problems[0].key == "(top level)"


def test_wrong_type_and_enum() -> None:
    text = edit(BASE, "    tier: 1\n", "    tier: high\n")
    text = edit(text, "    kind: vendor\n", "    kind: supplier\n")
    the_problem(text, "hosts.ant-db1.tier", line_of(text, "tier: high"), "expected integer")
    p = the_problem(text, "links.vendor-registration.kind", line_of(text, "kind: supplier"), "'supplier'")
    assert "vendor" in p.hint


def test_missing_required_key() -> None:
    text = edit(BASE, "    address: 10.10.2.12\n", "")
    the_problem(text, "hosts.ant-app1", line_of(text, "  ant-app1:"), "missing required key 'address'")


def test_bad_name() -> None:
    text = edit(BASE, "  ant-ed1:\n", "  Ant_ED1:\n")
    the_problem(text, "hosts.Ant_ED1", line_of(text, "Ant_ED1"), "'Ant_ED1' is not allowed")


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as info:
        load_inventory(tmp_path / "missing.yml")
    assert info.value.problems[0].key == "(file)"


@pytest.mark.parametrize("name", sorted(p.name for p in (Path(__file__).parents[2] / "inventories").glob("*.yml")))
def test_the_fast_parse_gives_exactly_the_data_of_the_line_recording_parse(name: str) -> None:
    from orchestrator.inventory.parse import parse_yaml, parse_yaml_fast

    text = (Path(__file__).parents[2] / "inventories" / name).read_text()
    assert parse_yaml_fast(text) == parse_yaml(text, name).data


def test_odd_keys_and_merges_parse_the_same_both_ways() -> None:
    from orchestrator.inventory.parse import parse_yaml, parse_yaml_fast

    text = "base: &b {x: 1, 2: two, true: yes, null: n}\nother:\n  <<: *b\n  y: [1, {3.5: z}]\n"
    assert parse_yaml_fast(text) == parse_yaml(text, "t.yml").data


def test_a_repeated_key_leaves_the_fast_path() -> None:
    from orchestrator.inventory.parse import parse_yaml_fast

    assert parse_yaml_fast("a: 1\nb: {c: 1, c: 2}\n") is None


@pytest.mark.parametrize("text", ["10.1.2.3", "0.0.0.0", "255.255.255.255", "192.168.001.1", "256.1.1.1", "1.2.3",
                                  "1.2.3.4 ", "01.2.3.4", "1.2.3.4/32", "a.b.c.d", "1..2.3"])
def test_the_fast_address_reader_agrees_with_ipaddress(text: str) -> None:
    from orchestrator.inventory import ipv4

    try:
        expected: object = ipaddress.IPv4Address(text)
    except ValueError:
        with pytest.raises(ValueError):
            ipv4(text)
        return
    assert ipv4(text) == expected


# --------------------------------------------------------------------------------------------
# the two YAML readers agree
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted([*Path(__file__).resolve().parents[2].glob("inventories/*.yml"),
                                         *Path(__file__).resolve().parents[2].glob("tests/data/*.yml")]),
                         ids=lambda p: p.name)
def test_fast_and_line_recording_readers_build_the_same_data(path: Path) -> None:
    """A clean file is read once without line marks; the reader that records lines (used as soon as
    something is wrong) must build exactly the same data, or problems would be reported on other data."""
    from orchestrator.inventory.parse import parse_yaml, parse_yaml_fast

    text = path.read_text(encoding="utf-8")
    fast = parse_yaml_fast(text)
    assert fast is not None
    slow = parse_yaml(text, str(path))
    assert slow.values == [] and slow.duplicates == []
    assert fast == slow.data


@pytest.mark.parametrize("text", [
    "a: !vault abc\n", "a: 2024-01-01\n", "a: .nan\n", "a: !!int x\n", "a: !!binary aGk=\n",
    "a: {b: 1, b: 2}\n", "a: &x [1, *x]\n", "a: &x {b: *x}\n", "a: {<<: 1}\n", "? [1, 2]\n: v\n",
    "!!set {a, b}\n", "a: !!map [1]\n",
], ids=["tag", "date", "nan", "bad-int", "binary", "repeat", "list-loop", "map-loop", "merge", "list-key",
        "set", "tagged-list"])
def test_what_the_careful_reading_reports_stops_the_fast_one(text: str) -> None:
    """One walker, two modes: whatever the careful mode records (a refused value, a repeated key),
    the fast mode must give up on, or a problem would go unreported on a file read only fast."""
    from orchestrator.inventory.parse import parse_yaml, parse_yaml_fast

    careful = parse_yaml(text, "t.yml")
    assert careful.values or careful.duplicates
    assert parse_yaml_fast(text) is None


def test_an_alias_bomb_stops_both_readings_at_the_budget() -> None:
    from orchestrator.inventory.parse import parse_yaml, parse_yaml_fast, value_budget

    lines = ["a0: [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 7)]
    text = "\n".join(lines).replace("a0: [", "a0: &a0 [") + "\n"
    assert parse_yaml_fast(text) is None
    with pytest.raises(InventoryError) as info:
        parse_yaml(text, "bomb.yml")
    assert f"more than {value_budget(text):,} values" in info.value.problems[0].message


def test_the_address_book_names_the_first_owner_of_an_address() -> None:
    from orchestrator.inventory.checks import AddressBook
    from orchestrator.inventory.problems import Problems

    problems = Problems("t.yml", {("hosts", "b", "address"): 7})
    book = AddressBook(problems, "mgmt", subnets={"mgmt": ipaddress.IPv4Network("10.99.0.0/16")})
    book.claim(ipaddress.IPv4Address("10.99.0.5"), "device a", ("devices", "a", "address"))
    book.claim(None, "host x", ("hosts", "x", "address"))
    book.claim(ipaddress.IPv4Address("10.99.0.5"), "host b", ("hosts", "b", "address"))
    assert [(p.line, p.key, p.message) for p in problems.items] == [
        (7, "hosts.b.address", "address 10.99.0.5 is already used by device a")]
    assert book.management_net == ipaddress.IPv4Network("10.99.0.0/16")
    assert AddressBook(problems, ["not", "a", "name"]).management_net is None


def test_alias_budget_grows_with_the_file_but_not_with_its_aliases() -> None:
    from orchestrator.inventory import value_budget

    assert value_budget("") >= 100_000
    assert value_budget("x" * 1_000_000) == value_budget("") + 2_000_000
