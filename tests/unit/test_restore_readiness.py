"""Issue 15: before a restore powers anything on, the plan and the preview say per host what will prove
it clean (a signed baseline of date X, or an attestation), and which segments stay isolated unless
someone attests; ``restore-status`` shows the same before the first restore run. Real signed baselines
in a temporary state directory; nothing is contacted."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from orchestrator import cli
from orchestrator.config import Settings
from orchestrator.integrity import BASELINE_SCHEMA, signing_key
from orchestrator.integrity.store import store_baseline
from orchestrator.model import HostOs
from orchestrator.planner import plan_from_dict

FAKE = Path(__file__).resolve().parents[1] / "data" / "fake-campus.yml"
TAKEN = "2026-01-10T09:00:00Z"


def main(state: Path, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    console = Console(file=out, width=240)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "console", console)
        mp.setattr(cli, "err_console", console)
        with pytest.raises(SystemExit) as info, contextlib.redirect_stdout(out):
            cli.main(["--state-dir", str(state), *argv])
    code = info.value.code
    return (code if isinstance(code, int) else 1), out.getvalue()


def _settings(state: Path) -> Settings:
    return Settings(state_dir=state, state_dir_source="cli", forks=8)


def _baseline(settings: Settings, host: str, ports: list[str]) -> Path:
    doc = {"schema": BASELINE_SCHEMA, "host": host, "taken": TAKEN, "roots": [], "snapshot": {"ports": ports}}
    return store_baseline(host, doc, signing_key(settings, create=True), settings)


def test_the_restore_plan_says_what_proves_each_host_clean_and_who_must_attest(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "state")
    for host in ("ad1", "triage1", "app1", "ws1"):
        _baseline(settings, host, ["tcp 0.0.0.0:22", "tcp 0.0.0.0:389"] if host == "ad1" else ["tcp 0.0.0.0:22"])
    code, out = main(settings.state_dir, "plan", str(FAKE), "--mode", "restore", "--json")
    assert code == 0, out
    doc = json.loads(out)
    readiness = doc["readiness"]
    hosts = {h["host"]: h for h in readiness["hosts"]}
    assert hosts["ad1"]["integrity"]["proof"] == "baseline"
    assert hosts["ad1"]["integrity"]["baseline_taken"] == TAKEN and hosts["ad1"]["integrity"]["key_id"]
    assert hosts["ad1"]["health"]["ports"] == [22, 389] and hosts["ad1"]["health"]["services"] == ["directory"]
    assert hosts["db1"]["integrity"]["proof"] == "attestation-required"
    assert "no baseline" in hosts["db1"]["integrity"]["why"] and hosts["db1"]["stays_isolated_unless_attested"]
    assert readiness["attestation_required"] == ["db1"] and readiness["held_segments"] == {"srv": ["db1"]}
    # an extension: the plan's own fields and id are what they always were, and it loads back
    assert plan_from_dict(doc).plan_id == doc["plan_id"]
    code, shutdown = main(settings.state_dir, "plan", str(FAKE), "--mode", "shutdown", "--json")
    assert "readiness" not in json.loads(shutdown)
    code, text = main(settings.state_dir, "plan", str(FAKE), "--mode", "restore")
    flat = " ".join(text.split())
    assert f"baseline of {TAKEN}" in flat and "ATTESTATION REQUIRED: no baseline" in flat
    assert "stays isolated unless attested: segment srv (db1)" in flat


def test_a_forged_baseline_is_named_as_unusable_and_never_attestable(tmp_path: Path) -> None:
    from orchestrator.inventory import load_inventory
    from orchestrator.readiness import BROKEN, host_readiness

    settings = _settings(tmp_path / "state")
    path = _baseline(settings, "db1", ["tcp 0.0.0.0:5432"])
    doc = json.loads(path.read_text())
    doc["snapshot"]["ports"].append("tcp 0.0.0.0:4444")
    path.write_text(json.dumps(doc))
    inventory = load_inventory(FAKE)
    r = host_readiness(inventory.hosts["db1"], settings)
    assert r.proof == BROKEN and "FAILS its signature check" in r.why and not r.needs_attestation
    code, text = main(settings.state_dir, "plan", str(FAKE), "--mode", "restore")
    assert code == 0 and "will be quarantined" in text and "db1" in text.split("will be quarantined", 1)[1]


def test_a_windows_host_needs_an_attestation_even_with_a_baseline(tmp_path: Path) -> None:
    from orchestrator.inventory import load_inventory
    from orchestrator.readiness import ATTESTATION, host_readiness

    settings = _settings(tmp_path / "state")
    _baseline(settings, "app1", ["tcp 0.0.0.0:22"])
    host = dataclasses.replace(load_inventory(FAKE).hosts["app1"], os=HostOs.WINDOWS)
    r = host_readiness(host, settings)
    assert r.proof == ATTESTATION and "windows" in r.why


def test_planning_creates_nothing_in_the_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "never"
    code, out = main(state, "plan", str(FAKE), "--mode", "restore", "--json")
    assert code == 0, out
    assert not state.exists()
    assert json.loads(out)["readiness"]["attestation_required"] == ["ad1", "db1", "triage1", "app1", "ws1"]


def test_restore_status_before_any_restore_shows_the_readiness(tmp_path: Path) -> None:
    settings = _settings(tmp_path / "state")
    _baseline(settings, "ad1", ["tcp 0.0.0.0:22"])
    code, out = main(settings.state_dir, "restore-status", str(FAKE), "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["run"] is None and doc["schema"] == "orchestrator.restore-status/v1"
    tiers = {t["tier"]: t for t in doc["tiers"]}
    assert [h["host"] for h in tiers[0]["hosts"]] == ["ad1"]
    assert tiers[0]["hosts"][0]["state"] == "off (no restore run yet)"
    srv = {s["segment"]: s for t in doc["tiers"] for s in t["segments"]}["srv"]
    assert srv["blocking"] == "needs an attestation: db1"
    code, text = main(settings.state_dir, "restore-status", str(FAKE))
    assert code == 0 and "no restore run yet" in text and "need an attestation" in text


def test_restore_status_refuses_a_run_that_is_not_a_restore(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fakes import FakeCampus

    from orchestrator.executor import ApprovalPolicy, RunOptions
    from orchestrator.inventory import load_inventory
    from orchestrator.model import Mode
    from orchestrator.planner import build_plan
    from orchestrator.runs import start_run

    inventory = load_inventory(FAKE)
    FakeCampus(inventory).install(monkeypatch)
    settings = _settings(tmp_path / "state")
    options = RunOptions(forks=8, operator="alice@ward", approve=ApprovalPolicy.ALL, stop_timeout_s=1.0)
    contain = start_run(inventory, build_plan(inventory, Mode.CONTAIN), settings, options, argv=["o"])
    code, out = main(settings.state_dir, "restore-status", str(FAKE), "--run", contain.run_id)
    assert code == 2 and "is a contain run, not a restore" in out
    code, out = main(settings.state_dir, "restore-status", str(FAKE), "--json")
    assert code == 0 and json.loads(out)["run"] is None, "a contain run is no restore to show"
