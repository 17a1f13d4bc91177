"""The planner with hypervisors and storage (tests/data/estate.yml): VMs stop, verified off, before the
hypervisor they run on, storage last; restore in reverse; a kept VM keeps both running."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.errors import UsageError
from orchestrator.inventory import validate_text
from orchestrator.model import Inventory, Mode, Plan, Scope
from orchestrator.planner import build_plan, plan_from_dict, plan_to_json

ESTATE_FILE = Path(__file__).parents[1] / "data" / "estate.yml"
ESTATE = ESTATE_FILE.read_text(encoding="utf-8")


def estate(text: str = ESTATE) -> Inventory:
    return validate_text(text, str(ESTATE_FILE)).inventory


def wave_of(plan: Plan, step_id: str) -> int:
    return next(w.index for w in plan.waves if any(s.id == step_id for s in w.steps))


def test_vms_stop_before_their_hypervisor_and_storage_stops_last() -> None:
    plan = build_plan(estate(), Mode.SHUTDOWN)
    app, db, esx, san = (wave_of(plan, f"stop-host:{h}") for h in ("emr-app1", "emr-db1", "esx1", "san1"))
    assert app < db < esx < san
    assert set(plan.step("stop-host:esx1").requires) == {"stop-host:emr-app1", "stop-host:emr-db1"}
    assert set(plan.step("stop-host:san1").requires) == {"stop-host:emr-app1", "stop-host:emr-db1", "stop-host:esx1"}
    assert plan.step("stop-host:esx1").reason == ("hypervisor: runs VMs emr-app1, emr-db1; stops after they are "
                                                  "verified off")
    assert plan.step("stop-host:san1").reason == ("storage: stores emr-app1, emr-db1; holds VMs of esx1; "
                                                  "stops after them")
    assert plan.step("stop-host:emr-app1").reason is None


def test_restore_powers_storage_then_hypervisors_then_vms() -> None:
    plan = build_plan(estate(), Mode.RESTORE)
    san, esx, db, app = (wave_of(plan, f"start-host:{h}") for h in ("san1", "esx1", "emr-db1", "emr-app1"))
    assert san < esx < db < app
    assert plan.step("start-host:esx1").requires == ("start-host:san1",)  # the same tier: started
    assert set(plan.step("start-host:emr-db1").requires) == {"check-health:esx1", "check-health:san1"}
    assert plan.step("start-host:emr-db1").reason == "runs on esx1; stored on san1: starts after them"
    assert plan.step("start-host:esx1").reason == "hypervisor: starts before the VMs it runs, emr-app1, emr-db1"
    assert plan.step("start-host:san1").reason == "storage: starts before what it holds, emr-app1, emr-db1"


def test_storage_and_hypervisors_only_order_by_their_hosts() -> None:
    """Without VMs on it, a hypervisor is just a host: it stops in the first wave."""
    text = ESTATE.replace("    runs_on: esx1\n", "").replace("    runs_on: [esx1]\n", "")
    plan = build_plan(estate(text), Mode.SHUTDOWN)
    assert wave_of(plan, "stop-host:esx1") == wave_of(plan, "stop-host:emr-app1")
    assert plan.step("stop-host:esx1").reason is None


def test_a_kept_vm_keeps_its_hypervisor_and_storage_running() -> None:
    text = ESTATE.replace("    tier: 2\n", "    tier: 2\n    keep_running: true\n")
    plan = build_plan(estate(text), Mode.SHUTDOWN)
    stopped = {s.target for s in plan.steps() if s.action.value == "stop-host"}
    assert stopped == {"emr-db1"}
    assert plan.kept == {"emr-app1": "keep_running: true", "esx1": "runs kept host emr-app1",
                         "san1": "stores kept host emr-app1"}


def test_a_scope_of_one_vm_stops_only_that_vm() -> None:
    plan = build_plan(estate(), Mode.SHUTDOWN, Scope(hosts=("emr-app1",)))
    assert [s.target for s in plan.steps() if s.action.value == "stop-host"] == ["emr-app1"]


def test_a_scope_with_a_hypervisor_but_not_its_vms_is_refused() -> None:
    with pytest.raises(UsageError, match=r"esx1 holds emr-app1, emr-db1") as refused:
        build_plan(estate(), Mode.SHUTDOWN, Scope(hosts=("esx1",)))
    assert "--host" in (refused.value.hint or "")
    plan = build_plan(estate(), Mode.SHUTDOWN, Scope(hosts=("esx1", "emr-app1", "emr-db1")))
    assert {s.target for s in plan.steps() if s.action.value == "stop-host"} == {"esx1", "emr-app1", "emr-db1"}
    build_plan(estate(), Mode.RESTORE, Scope(hosts=("esx1",)))  # starting a hypervisor alone is fine


def test_a_storage_vm_on_its_own_hypervisor_is_no_cycle() -> None:
    """A storage appliance running as a VM on the hypervisor whose VMs it stores (vSAN-like): the
    hypervisor does not wait for it (that would be a cycle); the VMs still stop first."""
    text = ESTATE.replace("    kind: storage\n", "    kind: storage\n    runs_on: esx1\n")
    plan = build_plan(estate(text), Mode.SHUTDOWN)
    assert wave_of(plan, "stop-host:emr-db1") < wave_of(plan, "stop-host:san1") < wave_of(plan, "stop-host:esx1")


def test_reasons_survive_the_plan_document_and_others_carry_none() -> None:
    plan = build_plan(estate(), Mode.SHUTDOWN)
    document = plan.as_dict()
    steps = {s["id"]: s for w in document["waves"] for s in w["steps"]}
    assert "reason" in steps["stop-host:esx1"]
    assert "reason" not in steps["stop-host:emr-app1"] and "reason" not in steps["verify:final"]
    again = plan_from_dict(document)
    assert again == plan
    assert plan_to_json(again) == plan_to_json(plan)


def test_plan_shows_hypervisors_and_storage_in_their_waves_and_why(capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.cli import main

    with pytest.raises(SystemExit) as done:
        main(["plan", str(ESTATE_FILE), "--mode", "shutdown"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "wave 4 stop-host:esx1: hypervisor: runs VMs emr-app1, emr-db1; stops after they are verified off" in out
    assert "wave 5 stop-host:san1: storage: stores emr-app1, emr-db1" in out


def test_power_status_with_no_controller_in_scope(capsys: pytest.CaptureFixture[str],
                                                  small_inventory_path: Path) -> None:
    from orchestrator.cli import main

    with pytest.raises(SystemExit) as done:
        main(["power", "status", str(small_inventory_path), "--no-probe", "--json"])
    assert done.value.code == 0
    assert json.loads(capsys.readouterr().out) == {"hosts": [], "controllers": []}
