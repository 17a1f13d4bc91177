"""Finding 4 end to end in the lab: a service name never runs as shell on the host.

The executor's health check (restore) asks the host's systemd about each listed service over SSH.
A name like ``ssh; touch /tmp/...`` (refused by validation, so put into the model directly) is one
quoted argument of ``systemctl is-active --``: the host is asked about a unit of that name, and the
injected command never runs there.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from pathlib import Path

from pinned_ssh import RemoteResult

from orchestrator import lab
from orchestrator.config import Settings
from orchestrator.drivers.ssh import SshDriver
from orchestrator.executor import Executor, Recorder, RunOptions, StepFailed
from orchestrator.executor.restore import check_health
from orchestrator.integrity import capture_baseline
from orchestrator.journal import Journal, read_journal
from orchestrator.model import Action, Inventory, Mode
from orchestrator.planner import build_plan

HOST = "ant-ad1"


def test_a_service_name_is_never_run_as_shell_by_the_health_check(
    lab_inventory: Inventory, lab_up_status: lab.LabStatus, lab_run: Callable[..., RemoteResult], tmp_path: Path
) -> None:
    marker = f"/tmp/adversarial-pwned-{uuid.uuid4().hex[:12]}"
    hostile = f"ssh; touch {marker}"
    host = lab_inventory.hosts[HOST]
    # No power driver: the failed check's quarantine only journals (the lab host is left running).
    host = dataclasses.replace(host, services=(*host.services, hostile, f"$(touch {marker})", f"`touch {marker}`"),
                               power=None)
    inventory = dataclasses.replace(lab_inventory, hosts={**lab_inventory.hosts, HOST: host})

    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=4)
    with SshDriver(lab_inventory) as ssh:
        capture_baseline(ssh, lab_inventory, HOST, settings)
    run_id = "20260113T053200Z-adv-health"
    run_dir = settings.run_dir(run_id)
    run_dir.mkdir(parents=True)
    plan = build_plan(inventory, Mode.RESTORE)
    [step] = [s for s in plan.steps() if s.action is Action.CHECK_HEALTH and s.target == HOST]
    journal = Journal.create(settings.journal_path(run_id), run_id)
    executor = Executor(inventory=inventory, plan=plan, settings=settings, run_id=run_id, run_dir=run_dir,
                        recorder=Recorder(journal), options=RunOptions(forks=4))
    failed: StepFailed | None = None
    try:
        check_health(executor.ctx, step)
    except StepFailed as exc:
        failed = exc
    finally:
        executor.drivers.close()
        journal.close()

    assert lab_run(HOST, f"test -e {marker}", check=False).rc == 1, "the injected command ran on the host"
    assert failed is not None, "a host without the listed services was reported healthy"
    evidence = failed.evidence
    assert evidence["services"]["ssh"] == "active"
    assert evidence["services"][hostile] != "active"  # systemd was asked about a unit of that very name
    assert f"service {hostile} is" in str(failed)
    checks = [r for r in read_journal(settings.journal_path(run_id)) if r["type"] == "verification"]
    assert checks and checks[-1]["passed"] is False
