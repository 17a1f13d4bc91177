"""Plan invariants over random valid inventories (hypothesis), through the real YAML loader.

Each invariant is checked on the wave index of every step: steps in one wave run in parallel, so
"before" always means "in a strictly earlier wave".
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from graphlib import CycleError

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import GeneratedInventory, dump, inventories, scoped_inventories

from orchestrator.inventory import validate_text
from orchestrator.model import Action, Inventory, Mode, Phase, Plan, Scope
from orchestrator.planner import _levels, build_plan, canonical_json, plan_from_dict, plan_to_json

PROPERTY_SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def load(gen: GeneratedInventory) -> Inventory:
    return validate_text(gen.text, "generated.yml").inventory


def wave_of(plan: Plan) -> dict[str, int]:
    return {step.id: wave.index for wave in plan.waves for step in wave.steps}


def ids(plan: Plan, action: Action) -> list[str]:
    return [s.target for s in plan.steps() if s.action is action]


def waves_with(plan: Plan, action: Action) -> list[int]:
    return [w.index for w in plan.waves if any(s.action is action for s in w.steps)]


def expected_selection(inv: Inventory, scope: Scope) -> tuple[set[str], set[str], set[str]]:
    """An independent reading of DESIGN §2 scope: hosts, segments (never management), links."""
    mgmt = inv.management_segment
    if scope.is_whole_site:
        return set(inv.hosts), set(inv.segments) - {mgmt}, set(inv.links)
    hosts = {
        h.name
        for h in inv.hosts.values()
        if h.campus in scope.campuses or h.segment in scope.segments or h.name in scope.hosts
    }
    segments = {s.name for s in inv.segments.values() if s.campus in scope.campuses} | set(scope.segments)
    segments |= {inv.hosts[h].segment for h in hosts}  # a host in scope is isolated with its segment
    links = {k.name for k in inv.links.values() if inv.devices[k.device].campus in scope.campuses}
    return hosts, segments - {mgmt}, links


def assert_common(plan: Plan) -> None:
    """Ids unique and well-formed; waves numbered 0..n-1; requires point strictly backwards."""
    steps = plan.steps()
    step_ids = [s.id for s in steps]
    assert len(step_ids) == len(set(step_ids)), "step ids are unique"
    assert [w.index for w in plan.waves] == list(range(len(plan.waves)))
    assert all(w.steps for w in plan.waves), "no empty waves"
    where = wave_of(plan)
    for wave in plan.waves:
        for step in wave.steps:
            assert step.id.startswith(f"{step.action.value}:")
            if step.action is not Action.VERIFY:  # the final check is "verify:final" with target "all"
                assert step.id == f"{step.action.value}:{step.target}"
            assert step.verify, f"{step.id} says what its probe checks"
            for required in step.requires:
                assert required in where, f"{step.id} requires unknown {required}"
                assert where[required] < wave.index, f"{step.id} requires {required} from a later wave"


def before(where: dict[str, int], earlier: Iterable[int], later: Iterable[int]) -> bool:
    earlier, later = list(earlier), list(later)
    return not earlier or not later or max(earlier) < min(later)


# --------------------------------------------------------------------------------------------
# contain / shutdown
# --------------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(case=scoped_inventories(), mode=st.sampled_from([Mode.CONTAIN, Mode.SHUTDOWN]))
def test_containment_and_shutdown_invariants(case: tuple[GeneratedInventory, Scope], mode: Mode) -> None:
    gen, scope = case
    inv = load(gen)
    plan = build_plan(inv, mode, scope)
    assert_common(plan)
    where = wave_of(plan)
    hosts, segments, links = expected_selection(inv, scope)
    kept = inv.keep_reasons()
    mgmt = inv.management_segment

    # what is touched: every link and segment in scope, never management
    assert set(ids(plan, Action.CUT_LINK)) == links
    assert set(ids(plan, Action.ISOLATE_SEGMENT)) == segments
    assert mgmt not in ids(plan, Action.ISOLATE_SEGMENT), "management is never isolated"
    assert not ids(plan, Action.START_HOST) and not ids(plan, Action.RECONNECT_SEGMENT)

    # every device that cuts or isolates has its config backed up first
    for step in plan.steps():
        if step.action in (Action.CUT_LINK, Action.ISOLATE_SEGMENT):
            assert step.device is not None
            assert f"backup-config:{step.device}" in step.requires

    # every link cut before any segment is isolated; vendor and internet before the rest
    cut, isolate = waves_with(plan, Action.CUT_LINK), waves_with(plan, Action.ISOLATE_SEGMENT)
    assert before(where, waves_with(plan, Action.BACKUP_CONFIG), cut + isolate)
    assert before(where, cut, isolate)
    first = [where[f"cut-link:{k}"] for k in links if inv.links[k].kind.value in ("vendor", "internet")]
    rest = [where[f"cut-link:{k}"] for k in links if inv.links[k].kind.value not in ("vendor", "internet")]
    assert before(where, first, rest)

    stopped = set(ids(plan, Action.STOP_HOST))
    if mode is Mode.CONTAIN:
        assert not stopped, "contain powers nothing off"
    else:
        assert stopped == hosts - set(kept), "every host in scope stops, except the kept ones"
        # every segment isolated before any host stops
        assert before(where, isolate + cut, waves_with(plan, Action.STOP_HOST))
        for h in stopped:
            seg = inv.hosts[h].segment
            if seg != mgmt:
                assert f"isolate-segment:{seg}" in where, f"{h} stops but its segment {seg} is not isolated"
        # a host stops strictly before every host it depends on
        for h in stopped:
            for dep in inv.hosts[h].depends_on:
                if dep in stopped:
                    assert where[f"stop-host:{h}"] < where[f"stop-host:{dep}"], f"{h} must stop before {dep}"
                    assert f"stop-host:{h}" in plan.step(f"stop-host:{dep}").requires
    assert not stopped & set(kept), "kept hosts never stop"
    assert set(plan.kept) == set(kept) & hosts

    # the final verification comes last, alone
    assert plan.waves[-1].phase is Phase.VERIFY
    assert [s.action for s in plan.waves[-1].steps] == [Action.VERIFY]
    assert all(s.action is not Action.VERIFY for w in plan.waves[:-1] for s in w.steps)


# --------------------------------------------------------------------------------------------
# restore
# --------------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(case=scoped_inventories())
def test_restore_invariants(  # noqa: C901 - one generated case checked against every restore invariant in turn
    case: tuple[GeneratedInventory, Scope],
) -> None:
    gen, scope = case
    inv = load(gen)
    plan = build_plan(inv, Mode.RESTORE, scope)
    assert_common(plan)
    where = wave_of(plan)
    hosts, segments, links = expected_selection(inv, scope)
    mgmt = inv.management_segment

    started = set(ids(plan, Action.START_HOST))
    assert started == hosts
    assert set(ids(plan, Action.RECONNECT_SEGMENT)) == segments
    assert mgmt not in ids(plan, Action.RECONNECT_SEGMENT)
    assert set(ids(plan, Action.RESTORE_LINK)) == links
    assert not ids(plan, Action.STOP_HOST) and not ids(plan, Action.CUT_LINK)
    assert not ids(plan, Action.ISOLATE_SEGMENT)

    for h in started:
        host = inv.hosts[h]
        start = where[f"start-host:{h}"]
        # after each of its dependencies that this plan starts
        for dep in host.depends_on:
            if dep in started:
                assert where[f"start-host:{dep}"] < start, f"{h} must start after {dep}"
                # same tier: after it started; lower tier: after it proved healthy
                needed = "start-host" if inv.hosts[dep].tier == host.tier else "check-health"
                assert f"{needed}:{dep}" in plan.step(f"start-host:{h}").requires
        # lower tiers strictly first: every step of a lower tier is in an earlier wave
        for other in started:
            if inv.hosts[other].tier < host.tier:
                for action in ("start-host", "check-integrity", "check-health"):
                    assert where[f"{action}:{other}"] < start
        # started -> integrity -> health, each in a later wave, each requiring the one before
        integrity, health = f"check-integrity:{h}", f"check-health:{h}"
        assert start < where[integrity] < where[health]
        assert plan.step(integrity).requires == (f"start-host:{h}",)
        assert plan.step(health).requires == (integrity,)
        # integrity-checked (and health-checked) before its segment is reconnected
        if host.segment != mgmt and host.segment in segments:
            reconnect = f"reconnect-segment:{host.segment}"
            assert reconnect in where, f"{host.segment} of {h} is never reconnected"
            assert where[health] < where[reconnect]

    # lower tiers' gates strictly first
    for step in plan.steps():
        if step.action is Action.GATE and step.tier is not None:
            for h in started:
                if inv.hosts[h].tier > step.tier:
                    assert where[step.id] < where[f"start-host:{h}"]
                if inv.hosts[h].tier == step.tier:
                    assert where[f"check-health:{h}"] < where[step.id]

    # every reconnect is behind a gate in an earlier wave
    for step in plan.steps():
        if step.action is Action.RECONNECT_SEGMENT:
            gates = [r for r in step.requires if r.startswith("gate:")]
            assert gates and all(where[g] < where[step.id] for g in gates)

    # links come back last, behind their own gate
    if links:
        link_waves = waves_with(plan, Action.RESTORE_LINK)
        others = [where[s.id] for s in plan.steps() if s.action is not Action.RESTORE_LINK and s.id != "gate:links"]
        assert before(where, others, [where["gate:links"]])
        assert before(where, [where["gate:links"]], link_waves)
        assert link_waves == [len(plan.waves) - 1]
        for k in links:
            assert "gate:links" in plan.step(f"restore-link:{k}").requires
    else:
        assert "gate:links" not in where


# --------------------------------------------------------------------------------------------
# determinism and the plan document
# --------------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(case=scoped_inventories(), mode=st.sampled_from(list(Mode)))
def test_same_inventory_same_bytes(case: tuple[GeneratedInventory, Scope], mode: Mode) -> None:
    gen, scope = case
    first = plan_to_json(build_plan(load(gen), mode, scope))
    assert plan_to_json(build_plan(load(gen), mode, scope)) == first, "reloading the YAML changes nothing"
    inv = load(gen)
    assert plan_to_json(build_plan(inv, mode, scope)) == plan_to_json(build_plan(inv, mode, scope))


@PROPERTY_SETTINGS
@given(gen=inventories(), mode=st.sampled_from(list(Mode)), flow=st.sampled_from([False, True, None]))
def test_key_order_and_yaml_style_do_not_change_the_waves(
    gen: GeneratedInventory, mode: Mode, flow: bool | None
) -> None:
    """The same inventory written differently (key order, flow style) gives the same waves."""
    reordered = {key: gen.data[key] for key in reversed(list(gen.data))}
    reordered["hosts"] = dict(reversed(list(gen.data["hosts"].items())))
    other = validate_text(dump(reordered, flow=flow, sort_keys=False), "other.yml").inventory
    a = build_plan(load(gen), mode)
    b = build_plan(other, mode)
    assert [w.as_dict() for w in a.waves] == [w.as_dict() for w in b.waves]
    assert a.kept == b.kept


@PROPERTY_SETTINGS
@given(case=scoped_inventories(), mode=st.sampled_from(list(Mode)))
def test_plan_document_round_trips(case: tuple[GeneratedInventory, Scope], mode: Mode) -> None:
    gen, scope = case
    plan = build_plan(load(gen), mode, scope)
    again = plan_from_dict(json.loads(plan_to_json(plan)))
    assert again == plan
    assert plan_to_json(again) == plan_to_json(plan)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(JSON_VALUES)
@settings(max_examples=300, deadline=None)
def test_canonical_json_is_the_standard_librarys_byte_for_byte(document: object) -> None:
    """plan_id hashes this text: orjson must write exactly what json.dumps wrote, so plans made before
    keep their plan_id (any text, integers past 64 bits included)."""
    assert canonical_json(document) == json.dumps(document, sort_keys=True, separators=(",", ":"),
                                                  ensure_ascii=False)


@given(st.integers(min_value=1, max_value=30).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n))))
@settings(max_examples=200, deadline=None)
def test_levels_are_longest_paths_and_cycles_are_refused(case: tuple[int, list[tuple[int, int]]]) -> None:
    """A node's level is the length of the longest chain of predecessors below it; a cycle raises."""
    n, pairs = case
    nodes = [f"n{i}" for i in range(n)]
    edges: dict[str, list[str]] = {}
    for a, b in pairs:
        edges.setdefault(nodes[a], []).append(nodes[b])  # nodes[a] comes after nodes[b]
    edges.setdefault(nodes[0], []).append("outside")  # predecessors outside the nodes are ignored

    def longest(node: str, path: tuple[str, ...]) -> int | None:
        if node in path:
            return None
        below = [longest(p, (*path, node)) for p in edges.get(node, ()) if p in nodes and p != node]
        return None if None in below else 1 + max((b for b in below if b is not None), default=-1)

    expected = {node: longest(node, ()) for node in nodes}
    if None in expected.values():
        with pytest.raises(CycleError):
            _levels(nodes, edges)
    else:
        assert _levels(nodes, edges) == expected
