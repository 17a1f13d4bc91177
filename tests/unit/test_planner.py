"""The planner on known inventories: exact order for the sample, scope resolution, the plan document."""

from __future__ import annotations

import json
from typing import Any

import pytest

from orchestrator.errors import PlanError, UsageError
from orchestrator.inventory import validate_text
from orchestrator.model import PLAN_SCHEMA, Action, Inventory, Mode, Phase, Plan, Scope
from orchestrator.planner import build_plan, plan_from_dict, plan_id_of, plan_to_json, resolve_scope


def shape(plan: Plan) -> list[tuple[str, list[str]]]:
    return [(w.phase.value, [s.id for s in w.steps]) for w in plan.waves]


# --------------------------------------------------------------------------------------------
# the sample inventory, order pinned
# --------------------------------------------------------------------------------------------

CONTAINMENT = [
    ("contain", ["backup-config:ant-core", "backup-config:ant-fw", "backup-config:deu-core"]),
    ("contain", ["cut-link:internet", "cut-link:vendor-registration"]),
    ("contain", ["cut-link:wan-deurne"]),
    ("contain", ["isolate-segment:ant-ed", "isolate-segment:ant-servers", "isolate-segment:deu-servers"]),
]


def test_contain_plan_for_the_sample(small_inventory: Inventory) -> None:
    plan = build_plan(small_inventory, Mode.CONTAIN)
    assert shape(plan) == [*CONTAINMENT, ("verify", ["verify:final"])]
    assert plan.step("cut-link:vendor-registration").device == "ant-fw"
    assert plan.step("cut-link:vendor-registration").requires == ("backup-config:ant-fw",)
    assert plan.step("isolate-segment:deu-servers").device == "deu-core"


def test_shutdown_plan_for_the_sample(small_inventory: Inventory) -> None:
    plan = build_plan(small_inventory, Mode.SHUTDOWN)
    assert shape(plan) == [
        *CONTAINMENT,
        ("shutdown", ["stop-host:ant-emr-app1", "stop-host:deu-ad1"]),
        ("shutdown", ["stop-host:ant-emr-db1"]),
        ("shutdown", ["stop-host:ant-ad1"]),
        ("verify", ["verify:final"]),
    ]
    # ant-ad1 waits for everything that needs it and that stops (not for the kept ED host)
    assert plan.step("stop-host:ant-ad1").requires == ("stop-host:ant-emr-db1", "stop-host:deu-ad1")
    assert dict(plan.kept) == {
        "ant-ed-triage1": "island emergency-department: ED keeps operating at reduced capacity"}


def test_restore_plan_for_the_sample(small_inventory: Inventory) -> None:
    plan = build_plan(small_inventory, Mode.RESTORE)
    assert shape(plan) == [
        ("restore", ["start-host:ant-ad1"]),
        ("restore", ["start-host:deu-ad1"]),
        ("restore", ["check-integrity:ant-ad1", "check-integrity:deu-ad1"]),
        ("restore", ["check-health:ant-ad1", "check-health:deu-ad1"]),
        ("restore", ["gate:tier-0"]),
        ("reconnect", ["reconnect-segment:deu-servers"]),
        ("restore", ["start-host:ant-emr-db1"]),
        ("restore", ["check-integrity:ant-emr-db1"]),
        ("restore", ["check-health:ant-emr-db1"]),
        ("restore", ["gate:tier-1"]),
        ("restore", ["start-host:ant-ed-triage1", "start-host:ant-emr-app1"]),
        ("restore", ["check-integrity:ant-ed-triage1", "check-integrity:ant-emr-app1"]),
        ("restore", ["check-health:ant-ed-triage1", "check-health:ant-emr-app1"]),
        ("restore", ["gate:tier-2"]),
        ("reconnect", ["reconnect-segment:ant-ed", "reconnect-segment:ant-servers"]),
        ("reconnect", ["gate:links"]),
        ("reconnect", ["restore-link:internet", "restore-link:vendor-registration", "restore-link:wan-deurne"]),
    ]
    assert plan.step("start-host:deu-ad1").requires == ("start-host:ant-ad1",)
    assert plan.step("reconnect-segment:ant-servers").requires == ("gate:tier-2",)
    assert plan.step("restore-link:wan-deurne").device == "deu-core"


def test_plan_is_pure_and_deterministic(small_inventory: Inventory) -> None:
    for mode in Mode:
        a, b = build_plan(small_inventory, mode), build_plan(small_inventory, mode)
        assert a == b
        assert plan_to_json(a) == plan_to_json(b)
        assert a.inventory_sha256 == small_inventory.sha256
        assert len(a.plan_id) == 16 and int(a.plan_id, 16) >= 0


def test_plan_ids_differ_by_mode_and_scope(small_inventory: Inventory) -> None:
    ids = {build_plan(small_inventory, m).plan_id for m in Mode}
    ids.add(build_plan(small_inventory, Mode.SHUTDOWN, Scope(campuses=("deurne",))).plan_id)
    assert len(ids) == 4


# --------------------------------------------------------------------------------------------
# scope
# --------------------------------------------------------------------------------------------


def test_campus_scope(small_inventory: Inventory) -> None:
    sel = resolve_scope(small_inventory, Scope(campuses=("deurne",)))
    assert sel.hosts == ("deu-ad1",)
    assert sel.segments == ("deu-servers",)
    assert sel.links == ("wan-deurne",), "links cut on the campus's own devices"
    assert sel.devices == ("deu-core",)
    plan = build_plan(small_inventory, Mode.SHUTDOWN, Scope(campuses=("deurne",)))
    assert [s.id for s in plan.steps() if s.action is Action.STOP_HOST] == ["stop-host:deu-ad1"]
    assert plan.scope == Scope(campuses=("deurne",))


def test_host_scope_isolates_the_hosts_segment_and_cuts_no_link(small_inventory: Inventory) -> None:
    sel = resolve_scope(small_inventory, Scope(hosts=("ant-emr-db1",)))
    assert sel.hosts == ("ant-emr-db1",)
    assert sel.segments == ("ant-servers",)
    assert sel.links == ()
    plan = build_plan(small_inventory, Mode.SHUTDOWN, Scope(hosts=("ant-emr-db1",)))
    assert plan.step("stop-host:ant-emr-db1").requires == (), "dependents outside the scope are not waited for"


def test_segment_scope(small_inventory: Inventory) -> None:
    sel = resolve_scope(small_inventory, Scope(segments=("ant-ed",)))
    assert (sel.hosts, sel.segments, sel.links, sel.devices) == (("ant-ed-triage1",), ("ant-ed",), (), ("ant-core",))
    plan = build_plan(small_inventory, Mode.SHUTDOWN, Scope(segments=("ant-ed",)))
    assert not [s for s in plan.steps() if s.action is Action.STOP_HOST], "the only host is on an island"
    assert dict(plan.kept) == {"ant-ed-triage1": "island emergency-department: ED keeps operating at reduced capacity"}


def test_scopes_combine(small_inventory: Inventory) -> None:
    sel = resolve_scope(small_inventory, Scope(campuses=("deurne",), segments=("ant-ed",), hosts=("ant-ad1",)))
    assert sel.hosts == ("ant-ad1", "ant-ed-triage1", "deu-ad1")
    assert sel.segments == ("ant-ed", "ant-servers", "deu-servers")


@pytest.mark.parametrize(
    ("scope", "words"),
    [
        (Scope(campuses=("berchem",)), "campus 'berchem'"),
        (Scope(segments=("ant-lab",)), "segment 'ant-lab'"),
        (Scope(hosts=("ant-pacs1",)), "host 'ant-pacs1'"),
    ],
)
def test_unknown_scope_names_are_refused(small_inventory: Inventory, scope: Scope, words: str) -> None:
    with pytest.raises(UsageError) as info:
        build_plan(small_inventory, Mode.SHUTDOWN, scope)
    assert words in str(info.value)
    assert info.value.exit_code == 2


def test_every_unknown_scope_name_is_listed(small_inventory: Inventory) -> None:
    with pytest.raises(UsageError) as info:
        resolve_scope(small_inventory, Scope(campuses=("x",), hosts=("y", "z")))
    assert all(name in str(info.value) for name in ("campus 'x'", "host 'y'", "host 'z'"))


def test_management_segment_cannot_be_scoped(small_inventory: Inventory) -> None:
    with pytest.raises(UsageError, match="never isolated"):
        resolve_scope(small_inventory, Scope(segments=("mgmt",)))


SHARED_SEGMENT = """\
version: 1
site: {name: shared}
management: {segment: mgmt}
campuses: {antwerp: {}, deurne: {}}
segments:
  mgmt: {subnet: 10.99.0.0/16, zone: management}
  shared: {subnet: 10.30.0.0/24, zone: servers, gateway: core}
devices:
  core: {platform: linux, address: 10.99.0.2, role: core, credentials: lab}
hosts:
  ant-print1: {campus: antwerp, segment: shared, address: 10.30.0.10, management_address: 10.99.3.10,
               credentials: lab}
credentials:
  lab: {username: root, key_file: ~/.ssh/k}
"""


def test_campus_scope_isolates_the_segment_of_a_campus_host_on_a_shared_segment() -> None:
    """Regression: a host picked by --campus on a campus-less segment used to stop un-isolated."""
    inv = validate_text(SHARED_SEGMENT, "shared.yml").inventory
    plan = build_plan(inv, Mode.SHUTDOWN, Scope(campuses=("antwerp",)))
    ids = [s.id for s in plan.steps()]
    assert "stop-host:ant-print1" in ids
    assert "isolate-segment:shared" in ids
    assert ids.index("isolate-segment:shared") < ids.index("stop-host:ant-print1")


def test_restore_without_hosts_still_reconnects_segments_behind_a_gate() -> None:
    text = SHARED_SEGMENT.replace(
        "hosts:\n  ant-print1: {campus: antwerp, segment: shared, address: 10.30.0.10, management_address: 10.99.3.10,"
        "\n               credentials: lab}\n", "hosts: {}\n")
    inv = validate_text(text, "empty.yml").inventory
    plan = build_plan(inv, Mode.RESTORE)
    assert shape(plan) == [("restore", ["gate:segments"]), ("reconnect", ["reconnect-segment:shared"])]
    assert plan.step("reconnect-segment:shared").requires == ("gate:segments",)


def test_keep_running_host_never_stops(small_inventory: Inventory) -> None:
    from dataclasses import replace

    hosts = dict(small_inventory.hosts)
    hosts["ant-ad1"] = replace(hosts["ant-ad1"], keep_running=True)
    inv = replace(small_inventory, hosts=hosts)
    plan = build_plan(inv, Mode.SHUTDOWN)
    stopped = [s.target for s in plan.steps() if s.action is Action.STOP_HOST]
    assert "ant-ad1" not in stopped
    assert plan.kept["ant-ad1"] == "keep_running: true"
    assert plan.step("stop-host:ant-emr-db1").requires == ("stop-host:ant-emr-app1",)


# --------------------------------------------------------------------------------------------
# the plan document
# --------------------------------------------------------------------------------------------


def document(plan: Plan) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(plan_to_json(plan))
    return doc


def test_document_round_trips(small_inventory: Inventory) -> None:
    for mode in Mode:
        plan = build_plan(small_inventory, mode, Scope(campuses=("antwerp",)))
        assert plan_from_dict(document(plan)) == plan


def test_plan_id_is_the_hash_of_the_content(small_inventory: Inventory) -> None:
    plan = build_plan(small_inventory, Mode.SHUTDOWN)
    doc = document(plan)
    assert doc["plan_id"] == plan_id_of(doc) == plan.plan_id
    doc["plan_id"] = "0" * 16
    assert plan_id_of(doc) == plan.plan_id, "the plan_id field itself is not hashed"


def edited(doc: dict[str, Any], how: str) -> dict[str, Any]:
    if how == "target":
        doc["waves"][4]["steps"][0]["target"] = "ant-ed-triage1"
    elif how == "drop-step":
        del doc["waves"][1]["steps"][0]
    elif how == "swap-waves":
        doc["waves"][4], doc["waves"][6] = doc["waves"][6], doc["waves"][4]
    elif how == "mode":
        doc["mode"] = "contain"
    elif how == "sha":
        doc["inventory_sha256"] = "0" * 64
    elif how == "kept":
        doc["kept"] = {}
    elif how == "requires":
        doc["waves"][6]["steps"][0]["requires"] = []
    return doc


@pytest.mark.parametrize("how", ["target", "drop-step", "swap-waves", "mode", "sha", "kept", "requires"])
def test_an_edited_plan_is_refused(small_inventory: Inventory, how: str) -> None:
    doc = edited(document(build_plan(small_inventory, Mode.SHUTDOWN)), how)
    with pytest.raises(PlanError, match="edited") as info:
        plan_from_dict(doc)
    assert info.value.exit_code == 2
    assert info.value.hint and "orchestrator plan" in info.value.hint


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda d: d.update(schema="orchestrator.plan/v0"), "not an orchestrator plan"),
        (lambda d: d.pop("schema"), "not an orchestrator plan"),
        (lambda d: d.pop("waves"), "malformed"),
        (lambda d: d.update(mode="reboot"), "malformed"),
        (lambda d: d["waves"][0]["steps"][0].update(action="format-disk"), "malformed"),
        (lambda d: d["waves"][0].update(phase="party"), "malformed"),
        (lambda d: d["waves"][0]["steps"][0].pop("verify"), "malformed"),
        (lambda d: d["waves"][0].update(steps=["cut-link:x"]), "malformed"),
        (lambda d: d.update(waves={"0": []}), "malformed"),
    ],
    ids=["other-schema", "no-schema", "no-waves", "bad-mode", "bad-action", "bad-phase", "no-verify",
         "step-not-object", "waves-not-list"],
)
def test_a_malformed_plan_is_refused(small_inventory: Inventory, mutate: Any, words: str) -> None:
    doc = document(build_plan(small_inventory, Mode.SHUTDOWN))
    mutate(doc)
    with pytest.raises(PlanError, match=words):
        plan_from_dict(doc)


@pytest.mark.parametrize("not_a_plan", [[], "plan", 42, None])
def test_a_document_that_is_not_an_object_is_refused(not_a_plan: Any) -> None:
    with pytest.raises(PlanError):
        plan_from_dict(not_a_plan)


def test_document_shape(small_inventory: Inventory) -> None:
    doc = document(build_plan(small_inventory, Mode.SHUTDOWN))
    assert doc["schema"] == PLAN_SCHEMA
    assert list(doc) == ["schema", "mode", "site", "inventory", "inventory_sha256", "plan_id", "scope", "kept",
                         "waves"]
    assert doc["waves"][0] == {"index": 0, "phase": Phase.CONTAIN.value, "steps": doc["waves"][0]["steps"]}
    assert doc["waves"][1]["steps"][1] == {
        "id": "cut-link:vendor-registration", "action": "cut-link", "target": "vendor-registration",
        "device": "ant-fw", "requires": ["backup-config:ant-fw"], "verify": doc["waves"][1]["steps"][1]["verify"]}
    assert plan_to_json(build_plan(small_inventory, Mode.SHUTDOWN)).endswith("}\n")


def test_the_plan_document_is_what_the_standard_library_would_write(small_inventory: Inventory) -> None:
    for mode in Mode:
        plan = build_plan(small_inventory, mode)
        assert plan_to_json(plan) == json.dumps(plan.as_dict(), indent=2, ensure_ascii=False) + "\n"
