"""Contract (DESIGN.md §4, §5): the plan document's shape and the exit codes, through the real console script.

Scripts and outside checks rely on these; extend them freely, never change what is pinned here.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import PlanError
from orchestrator.planner import plan_from_dict

SAMPLE = Path(__file__).parents[1] / "data" / "small.yml"

TOP_LEVEL = {"schema", "mode", "inventory_sha256", "plan_id", "waves"}
WAVE_KEYS = {"index", "phase", "steps"}
STEP_KEYS = {"id", "action", "target", "verify"}
ACTIONS = {"backup-config", "cut-link", "isolate-segment", "stop-host", "verify", "start-host", "check-integrity",
           "check-health", "gate", "reconnect-segment", "restore-link"}
ON_A_DEVICE = {"backup-config", "cut-link", "isolate-segment", "reconnect-segment", "restore-link"}
PHASES = {"contain", "shutdown", "verify", "restore", "reconnect"}


@cache
def console_script() -> str:
    beside = Path(sys.executable).with_name("orchestrator")
    if beside.exists():
        return str(beside)
    found = shutil.which("orchestrator")
    assert found, "the `orchestrator` console script is not installed (pip install -e .)"
    return found


def orchestrator(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([console_script(), *argv], capture_output=True, text=True, timeout=120, check=False)


def plan_document(mode: str, *extra: str) -> dict[str, Any]:
    done = orchestrator("plan", str(SAMPLE), "--mode", mode, "--json", *extra)
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


@pytest.fixture(scope="module", params=["contain", "shutdown", "restore"])
def document(request: pytest.FixtureRequest) -> dict[str, Any]:
    return plan_document(str(request.param))


# --------------------------------------------------------------------------------------------
# §4: the plan document
# --------------------------------------------------------------------------------------------


def test_top_level(document: dict[str, Any]) -> None:
    assert set(document) >= TOP_LEVEL
    assert document["schema"] == "orchestrator.plan/v1"
    assert document["mode"] in ("contain", "shutdown", "restore")
    assert document["inventory_sha256"] == hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    assert isinstance(document["plan_id"], str) and re.fullmatch(r"[0-9a-f]{16,64}", document["plan_id"])
    assert isinstance(document["waves"], list) and document["waves"]


def test_waves_and_steps(document: dict[str, Any]) -> None:
    seen: set[str] = set()
    for i, wave in enumerate(document["waves"]):
        assert set(wave) >= WAVE_KEYS
        assert wave["index"] == i
        assert wave["phase"] in PHASES
        assert isinstance(wave["steps"], list) and wave["steps"]
        for step in wave["steps"]:
            assert set(step) >= STEP_KEYS
            assert all(isinstance(step[k], str) and step[k] for k in STEP_KEYS)
            assert step["action"] in ACTIONS
            assert step["id"].startswith(step["action"] + ":")
            assert step["id"] not in seen
            seen.add(step["id"])
            if step["action"] in ON_A_DEVICE:
                assert isinstance(step.get("device"), str) and step["device"], step
            for required in step.get("requires", []):
                assert required in seen and not any(required == s["id"] for s in wave["steps"])


def test_the_design_example_step() -> None:
    doc = plan_document("shutdown")
    assert doc["mode"] == "shutdown"
    assert doc["waves"][0]["phase"] == "contain"
    steps = {s["id"]: s for w in doc["waves"] for s in w["steps"]}
    step = steps["cut-link:vendor-registration"]
    assert (step["action"], step["target"], step["device"]) == ("cut-link", "vendor-registration", "ant-fw")
    assert step["verify"]


def test_same_inventory_same_bytes(tmp_path: Path) -> None:
    first = orchestrator("plan", str(SAMPLE), "--mode", "shutdown", "--json").stdout
    second = orchestrator("plan", str(SAMPLE), "--mode", "shutdown", "-o", str(tmp_path / "p.json"), "--json")
    assert first and first == second.stdout
    assert (tmp_path / "p.json").read_text(encoding="utf-8") == first


def test_the_document_loads_back_and_an_edit_is_refused() -> None:
    doc = plan_document("shutdown")
    assert plan_from_dict(doc).plan_id == doc["plan_id"]
    doc["waves"][-2]["steps"][0]["target"] = "ant-ed-triage1"
    with pytest.raises(PlanError):
        plan_from_dict(doc)


# --------------------------------------------------------------------------------------------
# §5: exit codes
# --------------------------------------------------------------------------------------------

BAD = """\
version: 1
site: {name: bad}
management: {segment: mgmt}
segments:
  mgmt: {subnet: 10.99.0.0/16, zone: management}
hosts:
  a: {segment: nowhere, address: 10.99.1.1, credentials: lab}
credentials:
  lab: {username: root, key_file: k}
"""


def test_validate_exit_codes(tmp_path: Path) -> None:
    ok = orchestrator("validate", str(SAMPLE))
    assert ok.returncode == 0, ok.stderr
    bad_file = tmp_path / "bad.yml"
    bad_file.write_text(BAD, encoding="utf-8")
    bad = orchestrator("validate", str(bad_file))
    assert bad.returncode == 2
    assert f"{bad_file}:7" in bad.stderr and "hosts.a.segment" in bad.stderr
    assert orchestrator("validate", str(SAMPLE), "--strict").returncode == 2
    assert orchestrator("validate", str(tmp_path / "missing.yml")).returncode == 2


def test_validate_json_is_parseable(tmp_path: Path) -> None:
    ok = orchestrator("validate", str(SAMPLE), "--json")
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["valid"] is True
    bad_file = tmp_path / "bad.yml"
    bad_file.write_text(BAD, encoding="utf-8")
    bad = orchestrator("validate", str(bad_file), "--json")
    assert bad.returncode == 2
    doc = json.loads(bad.stdout)
    assert doc["valid"] is False
    errors = [p for p in doc["problems"] if p["severity"] == "error"]
    assert [(p["file"], p["line"], p["key"]) for p in errors] == [(str(bad_file), 7, "hosts.a.segment")]


@pytest.mark.parametrize(
    "scope", [("--campus", "berchem"), ("--segment", "ant-lab"), ("--host", "ant-pacs1")],
    ids=["campus", "segment", "host"],
)
def test_plan_unknown_scope_exits_2(scope: tuple[str, str]) -> None:
    done = orchestrator("plan", str(SAMPLE), "--mode", "shutdown", *scope, "--json")
    assert done.returncode == 2
    assert done.stdout == ""
    assert scope[1] in done.stderr


def test_plan_bad_inventory_exits_2(tmp_path: Path) -> None:
    bad_file = tmp_path / "bad.yml"
    bad_file.write_text(BAD, encoding="utf-8")
    done = orchestrator("plan", str(bad_file), "--mode", "contain", "--json")
    assert done.returncode == 2
    assert done.stdout == ""


def test_plan_bad_mode_exits_2() -> None:
    assert orchestrator("plan", str(SAMPLE), "--mode", "panic").returncode == 2


def test_python_dash_m_is_the_same_program() -> None:
    done = subprocess.run([sys.executable, "-m", "orchestrator", "plan", str(SAMPLE), "--mode", "contain", "--json"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0
    assert done.stdout == orchestrator("plan", str(SAMPLE), "--mode", "contain", "--json").stdout


def test_inventory_schema_is_json() -> None:
    done = orchestrator("inventory", "schema")
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    assert schema["type"] == "object"
    assert {"version", "site", "management", "segments", "hosts"} <= set(schema["properties"])
