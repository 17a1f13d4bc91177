"""The CLI's run plumbing: the progress view's line per journal record, the one run-with-progress
wrapper (view, stop handlers, closing), the one gate prompt and the lab provider lookup."""

from __future__ import annotations

import io
import signal
import threading
from pathlib import Path
from typing import Any

import click
import pytest
from rich.console import Console

from orchestrator import cli
from orchestrator.config import Settings
from orchestrator.model import Action, Step


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """What the progress view prints, as plain text (no terminal, no colour)."""
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=200, highlight=False, emoji=False))
    return out


def shown(screen: io.StringIO, *records: dict[str, Any]) -> list[str]:
    view = cli.ProgressView(as_json=False)
    try:
        for record in records:
            view(record)
    finally:
        view.close()
    return [line.split("s ", 1)[1] for line in screen.getvalue().splitlines()]  # without the elapsed time


@pytest.mark.parametrize(("record", "line"), [
    ({"type": "wave-started", "wave": 2, "phase": "contain", "steps": ["a", "b"]}, "wave 2 (contain): 2 step(s)"),
    ({"type": "step-finished", "step_id": "isolate:s1", "status": "verified", "already": True},
     "  verified isolate:s1 (already in force)"),
    ({"type": "step-finished", "step_id": "stop:h1", "status": "verified", "escalated": True, "error": "sshd gone"},
     "  verified stop:h1 (escalated to power off) — sshd gone"),
    ({"type": "escalation", "host": "h1", "to": "power-off", "reason": "no answer"},
     "  escalate h1: power-off (no answer)"),
    ({"type": "quarantine", "host": "h1", "powered_off": False, "reason": "differs"},
     "  quarantine h1 (NOT powered off): differs"),
    ({"type": "clearance", "host": "h1", "segment": "s1", "text": "attested"}, "  cleared h1 for s1: attested"),
    ({"type": "milestone", "name": "contained", "elapsed_s": 3.14159}, "contained after 3.1 s"),
    ({"type": "gate-approved", "gate": "g1", "approver": "ann", "how": "all"}, "  approved g1 by ann (all)"),
    ({"type": "observer-error", "observer": "board", "error_type": "OSError", "message": "gone"},
     "  observer error board: OSError: gone (journaled; the run goes on)"),
], ids=lambda value: str(value["type"]) if isinstance(value, dict) else "")
def test_each_record_type_has_its_progress_line(screen: io.StringIO, record: dict[str, Any], line: str) -> None:
    assert shown(screen, record) == [line]


def test_records_without_a_progress_line_print_nothing(screen: io.StringIO) -> None:
    assert shown(screen, {"type": "step-started", "step_id": "a"}, {"type": "run-started"}, {}) == []


def test_markup_inside_a_record_is_shown_as_text(screen: io.StringIO) -> None:
    lines = shown(screen, {"type": "escalation", "host": "[/b]h", "to": "[red]x", "reason": "[bold]why"})
    assert lines == ["  escalate [/b]h: [red]x ([bold]why)"]


def test_the_json_printer_prints_every_record_as_one_sorted_line(capsys: pytest.CaptureFixture[str]) -> None:
    view = cli.ProgressView(as_json=True)
    view({"type": "step-started", "step_id": "a", "b": 1})
    view.close()
    assert capsys.readouterr().out == '{"b": 1, "step_id": "a", "type": "step-started"}\n'


def test_run_with_progress_hands_the_view_and_a_stop_event_to_the_run(screen: io.StringIO) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    seen: list[object] = []
    try:
        def run(view: cli.ProgressView, stop: threading.Event) -> str:
            seen.extend([view, stop])
            view({"type": "milestone", "name": "contained", "elapsed_s": 1.0})
            signal.raise_signal(signal.SIGTERM)  # the handler asks the run to stop, it does not kill
            return "result"

        assert cli.run_with_progress(False, run) == "result"
        view, stop = seen
        assert isinstance(view, cli.ProgressView) and isinstance(stop, threading.Event)
        assert stop.is_set()
        assert "contained after 1.0 s" in screen.getvalue()
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


def test_run_with_progress_closes_the_view_when_the_run_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[bool] = []
    monkeypatch.setattr(cli.ProgressView, "close", lambda self: closed.append(True))
    monkeypatch.setattr(cli, "install_stop_handlers", threading.Event)

    def run(view: cli.ProgressView, stop: threading.Event) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cli.run_with_progress(False, run)
    assert closed == [True]


def test_ask_asks_once_per_gate_and_defaults_to_no(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, bool]] = []

    def confirm(text: str, default: bool) -> bool:
        asked.append((text, default))
        return False

    monkeypatch.setattr(click, "confirm", confirm)
    step = Step(id="gate:s1", action=Action.GATE, target="s1", verify="approved")
    assert cli.ask(step, "reconnect s1") is False
    assert asked == [("gate s1: reconnect s1. Approve?", False)]


def test_the_lab_providers_are_the_nspawn_lab_and_the_vm_lab() -> None:
    from orchestrator import lab
    from orchestrator.lab import vm

    nspawn = cli.lab_provider("nspawn")
    assert (nspawn.up, nspawn.down, nspawn.status) == (lab.lab_up, lab.lab_down, lab.lab_status)
    vagrant = cli.lab_provider("vagrant")
    assert (vagrant.down, vagrant.status) == (vm.vm_lab_down, vm.vm_lab_status)


def test_shutdown_runs_its_plan_under_the_progress_view_and_exits_with_the_runs_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], small_inventory_path: Path, tmp_path: Path
) -> None:
    from orchestrator import runs
    from orchestrator.executor import RunOptions, RunResult
    from orchestrator.model import Inventory, Plan

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    calls: list[dict[str, Any]] = []

    def start_run(inventory: Inventory, plan: Plan, settings: Settings, options: RunOptions, *,
                  observers: list[Any], stop_event: threading.Event, argv: list[str]) -> RunResult:
        calls.append({"observers": observers, "stop": stop_event, "argv": argv, "options": options})
        observers[0]({"type": "milestone", "name": "contained", "elapsed_s": 2.0})
        return RunResult("r1", plan, {}, True, 2.0, None, {}, tmp_path / "journal.jsonl")

    monkeypatch.setattr(runs, "start_run", start_run)
    try:
        with pytest.raises(SystemExit) as exited:
            cli.main(["--state-dir", str(tmp_path / "state"), "--forks", "3", "shutdown",
                      str(small_inventory_path), "--contain-only", "--yes"])
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])
    out = capsys.readouterr().out
    assert exited.value.code == 1  # interrupted
    (call,) = calls
    assert isinstance(call["observers"][0], cli.ProgressView) and isinstance(call["stop"], threading.Event)
    assert call["argv"][0] == "orchestrator"
    assert call["options"].forks == 3 and call["options"].approver is None and not call["options"].dry_run
    assert "contained after 2.0 s" in out
    assert "run r1: interrupted" in out and "continue with: orchestrator resume r1" in out


def test_resume_asks_at_gates_through_the_one_prompt(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from orchestrator import runs
    from orchestrator.executor import ApprovalPolicy, RunOptions, RunResult
    from orchestrator.model import Mode, Plan, Scope

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    seen: list[RunOptions] = []

    def resume_run(run_id: str, settings: Settings, options: RunOptions, *, observers: list[Any],
                   stop_event: threading.Event) -> RunResult:
        seen.append(options)
        plan = Plan(mode=Mode.RESTORE, site="s", inventory_path="i.yml", inventory_sha256="0" * 64, plan_id="p",
                    scope=Scope(), waves=(), kept={})
        return RunResult(run_id, plan, {}, False, None, None, {}, tmp_path / "journal.jsonl")

    monkeypatch.setattr(runs, "resume_run", resume_run)
    try:
        with pytest.raises(SystemExit) as exited:
            cli.main(["--state-dir", str(tmp_path), "resume", "r7", "--approve", "each", "--json"])
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])
    assert exited.value.code == 0
    (options,) = seen
    assert options.approve is ApprovalPolicy.EACH and options.approver is cli.ask
    assert '"run_id": "r7", "status": "completed"' in capsys.readouterr().out
