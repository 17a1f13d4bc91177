"""The CLI in-process: exit codes, human output and --json for validate, plan and inventory schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli import main
from orchestrator.inventory import inventory_schema
from orchestrator.planner import plan_from_dict

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    def invoke(*argv: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as info:
            main(list(argv))
        out, err = capsys.readouterr()
        code = info.value.code
        return (code if isinstance(code, int) else 1), out, err

    return invoke


BAD = """\
version: 1
site: {name: bad}
management: {segment: oob}
segments:
  mgmt: {subnet: 10.99.0.0/16, zone: management}
hosts:
  a: {segment: nowhere, address: 10.1.1.300, credentials: lab}
credentials:
  lab: {username: root, key_file: k, password: hunter2}
"""


# --------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------


def test_validate_valid(run: Run, small_inventory_path: Path) -> None:
    code, out, err = run("validate", str(small_inventory_path))
    assert code == 0
    assert "valid" in out and "5 hosts" in out
    assert "warning" in err and "ant-ed-triage1" in err and "ant-ad1" in err


def test_validate_valid_json(run: Run, small_inventory_path: Path) -> None:
    code, out, _ = run("validate", str(small_inventory_path), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["valid"] is True
    assert doc["counts"]["hosts"] == 5
    assert [p["severity"] for p in doc["problems"]] == ["warning"]


def test_validate_strict_turns_the_warning_into_an_error(run: Run, small_inventory_path: Path) -> None:
    code, _, err = run("validate", str(small_inventory_path), "--strict")
    assert code == 2
    assert "hosts.ant-ed-triage1.depends_on[0]" in err
    assert f"{small_inventory_path}:29" in err


def test_validate_invalid_lists_every_problem(run: Run, write_inventory: Callable[[str], Path]) -> None:
    path = write_inventory(BAD)
    code, out, err = run("validate", str(path))
    assert code == 2
    assert out == ""
    for where in (f"{path}:3: management.segment", f"{path}:7: hosts.a.segment", f"{path}:7: hosts.a.address",
                  f"{path}:9: credentials.lab.password"):
        assert where in err, err
    assert "hunter2" not in err, "a secret written by mistake is never echoed"


def test_validate_invalid_json(run: Run, write_inventory: Callable[[str], Path]) -> None:
    path = write_inventory(BAD)
    code, out, _ = run("validate", str(path), "--json")
    assert code == 2
    doc = json.loads(out)
    assert doc["valid"] is False
    keys = {p["key"] for p in doc["problems"]}
    assert {"management.segment", "hosts.a.segment", "hosts.a.address", "credentials.lab.password"} <= keys
    for problem in doc["problems"]:
        assert set(problem) == {"file", "line", "key", "message", "hint", "severity"}
        assert problem["file"] == str(path)
    assert "hunter2" not in out


def test_validate_missing_file(run: Run, tmp_path: Path) -> None:
    code, _, err = run("validate", str(tmp_path / "nope.yml"))
    assert code == 2
    assert "cannot read" in err


# --------------------------------------------------------------------------------------------
# plan
# --------------------------------------------------------------------------------------------


def test_plan_human_output(run: Run, small_inventory_path: Path) -> None:
    code, out, _ = run("plan", str(small_inventory_path), "--mode", "shutdown")
    assert code == 0
    for word in ("cut-link", "isolate-segment", "stop-host", "vendor-registration", "Stays running",
                 "ant-ed-triage1", "emergency-department"):
        assert word in out


def test_plan_json_and_output_file_are_the_same_document(run: Run, small_inventory_path: Path,
                                                         tmp_path: Path) -> None:
    target = tmp_path / "plan.json"
    code, out, _ = run("plan", str(small_inventory_path), "--mode", "restore", "--json", "-o", str(target))
    assert code == 0
    assert target.read_text(encoding="utf-8") == out
    doc: dict[str, Any] = json.loads(out)
    assert plan_from_dict(doc).plan_id == doc["plan_id"]


def test_plan_scope_flags(run: Run, small_inventory_path: Path) -> None:
    code, out, _ = run("plan", str(small_inventory_path), "--mode", "shutdown", "--campus", "deurne", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["scope"] == {"campuses": ["deurne"], "segments": [], "hosts": []}
    targets = {s["target"] for w in doc["waves"] for s in w["steps"] if s["action"] == "stop-host"}
    assert targets == {"deu-ad1"}


def test_plan_repeated_scope_flags_are_sorted_and_deduplicated(run: Run, small_inventory_path: Path) -> None:
    _, a, _ = run("plan", str(small_inventory_path), "--mode", "contain", "--host", "deu-ad1", "--host", "ant-ad1",
                  "--json")
    _, b, _ = run("plan", str(small_inventory_path), "--mode", "contain", "--host", "ant-ad1", "--host", "deu-ad1",
                  "--host", "ant-ad1", "--json")
    assert a == b
    assert json.loads(a)["scope"]["hosts"] == ["ant-ad1", "deu-ad1"]


@pytest.mark.parametrize(
    "flags",
    [("--campus", "berchem"), ("--segment", "ant-lab"), ("--host", "ant-pacs1"), ("--segment", "mgmt")],
    ids=["campus", "segment", "host", "management"],
)
def test_plan_unknown_scope_exits_2(run: Run, small_inventory_path: Path, flags: tuple[str, str]) -> None:
    code, out, err = run("plan", str(small_inventory_path), "--mode", "shutdown", *flags, "--json")
    assert code == 2
    assert out == ""
    assert flags[1] in err


def test_plan_bad_inventory_exits_2(run: Run, write_inventory: Callable[[str], Path]) -> None:
    code, out, err = run("plan", str(write_inventory(BAD)), "--mode", "shutdown", "--json")
    assert code == 2
    assert out == ""
    assert "hosts.a.segment" in err


@pytest.mark.parametrize("argv", [("--mode", "reboot"), ()], ids=["bad-mode", "no-mode"])
def test_plan_bad_flags_exit_2(run: Run, small_inventory_path: Path, argv: tuple[str, ...]) -> None:
    code, _, _ = run("plan", str(small_inventory_path), *argv)
    assert code == 2


# --------------------------------------------------------------------------------------------
# inventory schema
# --------------------------------------------------------------------------------------------


def test_inventory_schema_prints_the_packaged_schema(run: Run) -> None:
    code, out, _ = run("inventory", "schema")
    assert code == 0
    assert json.loads(out) == inventory_schema()


def test_the_schema_accepts_the_sample_and_rejects_unknown_keys(small_inventory_path: Path) -> None:
    import jsonschema
    import yaml

    data = yaml.safe_load(small_inventory_path.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(inventory_schema())
    assert list(validator.iter_errors(data)) == []
    data["hosts"]["ant-ad1"]["colour"] = "blue"
    assert [e.validator for e in validator.iter_errors(data)] == ["additionalProperties"]
