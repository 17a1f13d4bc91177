"""Finding 1: output never crashes a run.

A ``[/b]`` or ``[/]`` in any printed text (an island reason, a ``--host`` value, an integrity path a
compromised host planted, a device's reply) was parsed as rich markup: MarkupError inside the
executor's event fan-out stopped a shutdown mid-way with no ``run-finished``, and ``status`` and
``resume`` crashed on it again. Untrusted text is printed as text now, and an observer that raises
(progress view, JSON printer) is journaled once (``observer-error``) while the run goes on.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
from cli_helpers import LAB_YML, finished, lab_variant, orch, records, restore_lab, run_ids
from rich.console import Console

from orchestrator import cli, lab
from orchestrator.model import Inventory

if TYPE_CHECKING:
    from orchestrator.executor import RunResult

HOSTILE = "x[/b] y[/] z[bold red]w[/bold red] v\\"  # closing tags with no opening one, a tag, a trailing \


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """cli's consoles write here, as on an 100-column terminal."""
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=100, highlight=False, color_system=None))
    monkeypatch.setattr(cli, "err_console", Console(file=out, width=100, highlight=False, color_system=None))
    return out


def test_hostile_text_in_every_event_the_progress_view_prints_is_shown_literally(captured: io.StringIO) -> None:
    view = cli.ProgressView(as_json=False)
    events: list[dict[str, Any]] = [
        {"type": "wave-started", "wave": 1, "phase": HOSTILE, "steps": ["a"]},
        {"type": "step-started", "step_id": f"check-integrity:{HOSTILE}"},
        {"type": "step-finished", "step_id": f"check-integrity:{HOSTILE}", "status": "failed",
         "error": f"1 difference(s) from the baseline: files /tmp/{HOSTILE}", "escalated": True},
        {"type": "escalation", "host": HOSTILE, "to": HOSTILE, "reason": HOSTILE},
        {"type": "quarantine", "host": HOSTILE, "reason": f"integrity: files /tmp/{HOSTILE}", "powered_off": False},
        {"type": "clearance", "host": HOSTILE, "segment": HOSTILE, "text": HOSTILE},
        {"type": "milestone", "name": HOSTILE, "elapsed_s": 1.5},
        {"type": "gate-approved", "gate": HOSTILE, "approver": HOSTILE, "how": HOSTILE},
        {"type": "observer-error", "observer": HOSTILE, "error_type": "MarkupError", "message": HOSTILE},
    ]
    for event in events:
        view(event)
    view.close()
    text = captured.getvalue()
    assert text.count(HOSTILE) >= 12, text
    assert f"files /tmp/{HOSTILE}" in text


def test_a_hostile_host_value_is_refused_with_exit_2_and_shown_literally(
    captured: io.StringIO, small_inventory_path: Path
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["plan", str(small_inventory_path), "--mode", "contain", "--host", HOSTILE])
    assert info.value.code == 2
    assert HOSTILE in captured.getvalue()


def test_an_island_reason_with_markup_is_printed_in_the_plan_as_written(
    captured: io.StringIO, small_inventory_path: Path, tmp_path: Path
) -> None:
    text = small_inventory_path.read_text(encoding="utf-8")
    reason = "ED [/b] keeps [/] running"
    assert "reason: ED keeps operating at reduced capacity" in text
    hostile = tmp_path / "small.yml"
    hostile.write_text(text.replace("reason: ED keeps operating at reduced capacity", f"reason: '{reason}'"))
    with pytest.raises(SystemExit) as info:
        cli.main(["plan", str(hostile), "--mode", "shutdown"])
    assert info.value.code == 0
    assert reason in captured.getvalue()


def test_the_result_and_status_print_hostile_reasons_as_text(captured: io.StringIO) -> None:
    from types import SimpleNamespace

    result = SimpleNamespace(run_id="r1", status="failed", time_to_containment_s=None, time_to_shutdown_s=None,
                             quarantined={"h1": f"integrity: files /tmp/{HOSTILE}"},
                             left=[("check-integrity:h1", f"failed: files /tmp/{HOSTILE}")],
                             unproven=[], attested={}, journal_path=Path("/state/runs/r1/journal.jsonl"))
    cli.render_result(cast("RunResult", result), as_json=False)  # only what the renderer reads
    assert captured.getvalue().count(f"/tmp/{HOSTILE}") == 2


def test_a_view_that_raises_mid_run_is_journaled_once_and_the_run_still_finishes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, captured: io.StringIO
) -> None:
    """A device answers with markup; the real progress view prints it as text, and a view that
    chokes on it (as the old one did) is journaled once while the run finishes."""
    from fakes import FakeCampus
    from rich.errors import MarkupError
    from rich.markup import render

    from orchestrator.config import Settings
    from orchestrator.drivers.netmiko import CommandRejectedError
    from orchestrator.executor import RunOptions
    from orchestrator.inventory import load_inventory
    from orchestrator.journal import read_journal
    from orchestrator.model import Mode
    from orchestrator.planner import build_plan
    from orchestrator.runs import start_run

    inventory = load_inventory(Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml")
    campus = FakeCampus(inventory).install(monkeypatch)
    reply = f"% Invalid input detected at '^' marker. {HOSTILE}"
    campus.device_failures[("fw", "cut-link", "vendor")] = CommandRejectedError("fw", "nft add rule ...", reply)

    def old_view(record: dict[str, Any]) -> None:  # printed every value as markup
        render(str(record.get("error") or ""))

    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)
    result = start_run(inventory, build_plan(inventory, Mode.CONTAIN), settings,
                       RunOptions(forks=8, operator="alice@ward"),
                       observers=[cli.ProgressView(as_json=False), old_view], argv=["orchestrator", "test"])
    recs = read_journal(settings.journal_path(result.run_id))
    assert recs[-1]["type"] == "run-finished" and recs[-1]["status"] == "failed"
    assert [s for s, _ in result.left] == ["cut-link:vendor"], "only the refused cut is left; the rest ran"
    errors = [r for r in recs if r["type"] == "observer-error"]
    assert [(e["observer"], e["error_type"]) for e in errors] == [("old_view", MarkupError.__name__)]
    assert HOSTILE in captured.getvalue(), "the real view printed the device's reply as written"
    assert "observer error" in captured.getvalue()


# --------------------------------------------------------------------------------------------
# end to end on the lab: a real contain run through the console script, progress view on
# --------------------------------------------------------------------------------------------

REASON = "the ED keeps [/b] operating [/] at reduced capacity"


@pytest.fixture
def ed_reconnected_afterwards(lab_up_status: lab.LabStatus, lab_inventory: Inventory) -> Iterator[None]:
    yield
    restore_lab(lab_inventory)


@pytest.mark.lab
def test_a_contain_run_whose_island_reason_holds_markup_finishes_and_status_shows_it(
    tmp_path: Path, lab_inventory: Inventory, ed_reconnected_afterwards: None
) -> None:
    hostile = lab_variant(tmp_path, "lab-markup.yml", (
        "reason: the ED keeps operating at reduced capacity", f"reason: '{REASON}'"))
    state = tmp_path / "state"
    res = orch(state, "shutdown", str(hostile), "--contain-only", "--segment", "ant-ed", "--yes")
    out = res.stdout + res.stderr
    assert "Traceback" not in out and "MarkupError" not in out, out
    assert res.returncode == 0, out
    assert REASON in res.stdout, "the plan shows what stays running, and why, as written"
    (run_id,) = run_ids(state)
    recs = records(state, run_id)
    assert recs[-1]["type"] == "run-finished" and recs[-1]["status"] == "completed"
    assert finished(recs)["isolate-segment:ant-ed"]["status"] == "verified"
    assert not [r for r in recs if r["type"] == "observer-error"], "the progress view printed every event"
    status = orch(state, "status", run_id)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "Traceback" not in status.stderr
    assert REASON in status.stdout and "completed" in status.stdout
    assert LAB_YML.exists()
