"""``orchestrator attest``: careless or hostile use is refused clearly, never half-recorded.

An attestation clears a held-back host of a restore run; it is refused (exit 2) for an unknown run,
a run that is not a restore, a host the run does not restore, an empty --by or --reason and an
unreadable evidence file; and (exit 3) while another process holds the state directory's lock,
since it appends to the same journal a running restore writes. Nothing is written when refused.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator import cli
from orchestrator.config import Settings
from orchestrator.journal import read_journal


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Settings, str, str]:
    """A finished restore run and a finished contain run on the in-memory campus."""
    from fakes import FakeCampus

    from orchestrator.executor import ApprovalPolicy, RunOptions
    from orchestrator.inventory import load_inventory
    from orchestrator.model import Mode
    from orchestrator.planner import build_plan
    from orchestrator.runs import start_run

    inventory = load_inventory(Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml")
    FakeCampus(inventory).install(monkeypatch)
    settings = Settings(state_dir=tmp_path / "state", state_dir_source="cli", forks=8)
    options = RunOptions(forks=8, operator="alice@ward", stop_timeout_s=1.0, start_timeout_s=1.0,
                         power_off_timeout_s=1.0, approve=ApprovalPolicy.ALL)
    contain = start_run(inventory, build_plan(inventory, Mode.CONTAIN), settings, options, argv=["o"])
    restore = start_run(inventory, build_plan(inventory, Mode.RESTORE), settings, options, argv=["o"])
    return settings, restore.run_id, contain.run_id


def attest(settings: Settings, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    console = Console(file=out, width=200)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "console", console)
        mp.setattr(cli, "err_console", console)
        with pytest.raises(SystemExit) as info:
            cli.main(["--state-dir", str(settings.state_dir), "attest", *argv])
    code = info.value.code
    return (code if isinstance(code, int) else 1), out.getvalue()


@pytest.mark.parametrize(("argv", "says"), [
    (("no-such-run", "db1", "--by", "Jan", "--reason", "pulled"), "no run no-such-run"),
    (("{restore}", "nobody", "--by", "Jan", "--reason", "pulled"), "does not restore host 'nobody'"),
    (("{contain}", "db1", "--by", "Jan", "--reason", "pulled"), "is a contain run"),
    (("{restore}", "db1", "--by", "  ", "--reason", "pulled"), "--by is empty"),
    (("{restore}", "db1", "--by", "Jan", "--reason", ""), "--reason is empty"),
    (("{restore}", "db1", "--by", "Jan", "--reason", "pulled", "--evidence", "/nonexistent/photo.jpg"),
     "cannot read the evidence file"),
    (("{restore}", "db1", "--reason", "pulled"), "Missing option '--by'"),
])
def test_a_careless_attestation_is_refused_with_exit_2_and_nothing_is_written(
    runs: tuple[Settings, str, str], argv: tuple[str, ...], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, restore, contain = runs
    before = {run: read_journal(settings.journal_path(run)) for run in (restore, contain)}
    code, out = attest(settings, *(a.format(restore=restore, contain=contain) for a in argv))
    out += capsys.readouterr().err  # click's own usage errors
    assert code == 2, out
    assert says in " ".join(out.split()), out
    assert "Traceback" not in out
    for run, recs in before.items():
        assert read_journal(settings.journal_path(run)) == recs


def test_an_attestation_while_a_run_holds_the_lock_is_refused_with_exit_3(runs: tuple[Settings, str, str]) -> None:
    from orchestrator.lock import RunLock

    settings, restore, _ = runs
    before = read_journal(settings.journal_path(restore))
    with RunLock(settings.lock_path, "another-run", command="restore ..."):
        code, out = attest(settings, restore, "db1", "--by", "Jan", "--reason", "pulled")
    assert code == 3, out
    assert read_journal(settings.journal_path(restore)) == before


def test_an_attestation_is_journaled_with_who_when_why_and_the_evidence_hash(
    runs: tuple[Settings, str, str], tmp_path: Path
) -> None:
    settings, restore, _ = runs
    evidence = tmp_path / "ticket.txt"
    evidence.write_text("INC-4711: cable pulled\n")
    code, out = attest(settings, restore, "db1", "--by", "Jan  Peeters", "--reason", "cable [/b] pulled",
                       "--evidence", str(evidence))
    assert code == 0, out
    assert "cable [/b] pulled" in out, "shown as typed, never as markup"
    record = read_journal(settings.journal_path(restore))[-1]
    assert record["type"] == "attestation" and record["host"] == "db1"
    assert record["claim"] == "physically-disconnected" and record["by"] == "Jan Peeters"
    assert record["reason"] == "cable [/b] pulled" and record["operator"] and record["ts"]
    import hashlib

    assert record["evidence"] == {"file": str(evidence.resolve()), "bytes": evidence.stat().st_size,
                                  "sha256": hashlib.sha256(evidence.read_bytes()).hexdigest()}
    status = io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "console", Console(file=status, width=200))
        with pytest.raises(SystemExit):
            cli.main(["--state-dir", str(settings.state_dir), "status", restore])
    assert "attested: db1 by Jan Peeters (physically-disconnected): cable [/b] pulled" in status.getvalue()
