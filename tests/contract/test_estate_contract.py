"""Contract (DESIGN.md §3.1, §4): `power status --json` and the plan's optional step `reason`, through the
real console script, on tests/data/estate.yml (controllers moved to a closed loopback port, and no
password reference resolvable: nothing leaves this machine, and every controller fails as it would for
an operator who forgot to export the password)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

ESTATE = Path(__file__).parents[1] / "data" / "estate.yml"
HOST_KEYS = {"name", "controller", "state", "probe", "mismatch", "error"}  # DESIGN §3.1, extended with target, evidence
CONTROLLER_KEYS = {"name", "type", "endpoint", "hosts", "ok", "error", "hint"}


@cache
def console_script() -> str:
    beside = Path(sys.executable).with_name("orchestrator")
    found = str(beside) if beside.exists() else shutil.which("orchestrator")
    assert found, "the `orchestrator` console script is not installed (pip install -e .)"
    return found


def loopback_estate(tmp_path: Path) -> Path:
    text = ESTATE.read_text(encoding="utf-8")
    for address in ("vcenter.example.org", "https://10.99.3.21:8443", "10.99.3.31"):
        text = text.replace(f"address: {address}\n", "address: 127.0.0.1:9\n"
                            if "https" not in address else "address: https://127.0.0.1:9\n")
    path = tmp_path / "estate.yml"
    path.write_text(text, encoding="utf-8")
    return path


def orchestrator(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "VCENTER_PASSWORD"}
    return subprocess.run([console_script(), *map(str, argv)], capture_output=True, text=True, timeout=120,
                          check=False, env=env)


def test_power_status_json_shape_and_exit_code(tmp_path: Path) -> None:
    done = orchestrator("power", "status", loopback_estate(tmp_path), "--json", "--no-probe")
    assert done.returncode == 1, done.stderr  # no controller answered
    document: dict[str, Any] = json.loads(done.stdout)
    assert set(document) == {"hosts", "controllers"}
    assert [h["name"] for h in document["hosts"]] == ["emr-app1", "emr-db1", "esx1", "san1"]
    for host in document["hosts"]:
        assert set(host) >= HOST_KEYS
        assert host["state"] == "unknown" and isinstance(host["error"], str) and host["error"]
        assert host["probe"] is None and host["mismatch"] is False
    assert [c["name"] for c in document["controllers"]] == ["bmc-esx1", "bmc-san1", "vc-antwerp"]
    for controller in document["controllers"]:
        assert set(controller) >= CONTROLLER_KEYS
        assert controller["ok"] is False and controller["type"] in ("vsphere", "redfish", "ipmi")
    vc = document["controllers"][2]
    assert "VCENTER_PASSWORD" in vc["error"]


def test_plan_steps_may_carry_a_reason_and_only_where_it_explains(tmp_path: Path) -> None:
    done = orchestrator("plan", ESTATE, "--mode", "shutdown", "--json")
    assert done.returncode == 0, done.stderr
    steps = [s for w in json.loads(done.stdout)["waves"] for s in w["steps"]]
    with_reason = {s["id"]: s["reason"] for s in steps if "reason" in s}
    assert set(with_reason) == {"stop-host:esx1", "stop-host:san1"}
    assert all(isinstance(r, str) and r for r in with_reason.values())
