"""Site health suites end to end on the nspawn lab, through the console script: inventories/lab.yml's
suites (inventories/health/) pass against the real machines, a restore runs them after integrity and
completes, a suite failing on purpose (a stopped service) keeps its host's segment isolated while the
rest returns, and `orchestrator health check` shows its table and exits 1 on a failure.

The tests of this module run in order and share one state directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import LAB_YML, finished, lab_variant, last_run_id, orch, records, restore_lab

from orchestrator import lab
from orchestrator.model import Inventory

Run = Callable[..., Any]
SUITE_KEYS = {"suite", "test", "outcome", "duration_s", "message"}
WITH_SUITES = {"ant-ad1": "health/test_directory.py", "ant-ad2": "health/test_directory.py",
               "ant-ed-dc1": "health/test_directory.py", "deu-ad1": "health/test_directory.py",
               "ant-emr-db1": "health/test_emr_database.py", "ant-emr-app1": "health/test_emr_app.py",
               "ant-ed-triage1": "health/test_ed_triage.py"}


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("health-state")


@pytest.fixture(scope="module", autouse=True)
def lab_restored_afterwards(lab_up_status: lab.LabStatus, lab_inventory: Inventory) -> Iterator[None]:
    yield
    restore_lab(lab_inventory)


def test_the_lab_inventory_names_a_suite_for_each_role_that_has_one(lab_inventory: Inventory) -> None:
    named = {n: h.health for n, h in lab_inventory.hosts.items() if h.health}
    assert {n: [str(Path(p).relative_to(LAB_YML.parent)) for p in s] for n, s in named.items()} == {
        n: [s] for n, s in WITH_SUITES.items()}


def test_health_check_passes_on_the_lab_with_a_table_and_json(state_dir: Path) -> None:
    started = time.monotonic()
    res = orch(state_dir, "health", "check", LAB_YML)
    took = time.monotonic() - started
    assert res.returncode == 0, res.stdout + res.stderr
    for host in WITH_SUITES:
        assert f"passed {host}:" in res.stdout, res.stdout
    assert "test_database_answers_a_query" in res.stdout and "test_emr_app_answers_http_200" in res.stdout
    doc = json.loads(orch(state_dir, "health", "check", LAB_YML, "--json").stdout)
    assert doc["passed"] is True and set(doc["hosts"]) == set(WITH_SUITES)
    for host, entry in doc["hosts"].items():
        assert entry["counts"]["passed"] == len(entry["tests"]) >= 2, (host, entry)
        assert all(set(t) == SUITE_KEYS and t["suite"] == WITH_SUITES[host] for t in entry["tests"])
    assert set(doc["without_suites"]) == {"ant-pacs1", "ant-portal1", "ant-ws1", "deu-files1", "deu-lab-app1",
                                          "deu-lab-db1", "deu-ws1", "deu-ws2"}
    print(f"\nhealth check, whole lab ({len(WITH_SUITES)} hosts with suites, in parallel): {took:.1f} s; per host: "
          + ", ".join(f"{h} {e['duration_s']:.1f} s" for h, e in sorted(doc["hosts"].items())))


def test_health_check_fails_on_a_stopped_service_naming_the_test(state_dir: Path, lab_run: Run) -> None:
    lab_run("ant-ad2", "systemctl stop directory")
    try:
        res = orch(state_dir, "health", "check", LAB_YML, "--host", "ant-ad2", "--host", "ant-ad1")
        assert res.returncode == 1, res.stdout + res.stderr
        assert "FAILED ant-ad2: 0/2 passed, 2 failed" in res.stdout, res.stdout
        assert "passed ant-ad1: 2/2 passed" in res.stdout
        assert ("ant-ad2 health/test_directory.py::test_directory_service_is_running failed: AssertionError: "
                "the directory service is not running") in res.stdout, res.stdout
        assert "test_directory_listens_on_8389 failed: AssertionError: nothing listens on TCP 8389" in res.stdout
    finally:
        lab_run("ant-ad2", "systemctl start directory")


def _suites_of(recs: list[dict[str, Any]], host: str) -> list[dict[str, Any]]:
    suites: list[dict[str, Any]] = finished(recs)[f"check-health:{host}"]["evidence"]["suites"]
    return suites


def test_restore_runs_the_suites_after_integrity_and_completes(state_dir: Path, lab_inventory: Inventory) -> None:
    assert orch(state_dir, "baseline", "capture", LAB_YML).returncode == 0
    scope = ("--host", "ant-emr-app1", "--host", "ant-emr-db1")
    res = orch(state_dir, "shutdown", LAB_YML, *scope, "--yes")
    assert res.returncode == 0, res.stdout + res.stderr
    shutdown_run = last_run_id(state_dir)
    res = orch(state_dir, "restore", LAB_YML, "--run", shutdown_run, "--approve", "all")
    assert res.returncode == 0, res.stdout + res.stderr
    recs = records(state_dir, last_run_id(state_dir))
    done = finished(recs)
    for host in ("ant-emr-db1", "ant-emr-app1"):
        assert done[f"start-host:{host}"]["changed"] is True, "powered on: the suites ran after a real boot"
        suites = _suites_of(recs, host)
        assert suites and all(set(t) == SUITE_KEYS for t in suites)
        assert {t["outcome"] for t in suites} == {"passed"}, suites
        assert {t["suite"] for t in suites} == {WITH_SUITES[host]}
        assert all(isinstance(t["duration_s"], float) for t in suites)
        integrity, health = done[f"check-integrity:{host}"], done[f"check-health:{host}"]
        assert integrity["status"] == health["status"] == "verified"
        print(f"\n{host}: integrity {integrity['duration_s']:.1f} s + health {health['duration_s']:.1f} s "
              f"(suites {health['evidence']['suites_duration_s']:.1f} s of it)")
    tests = {t["test"] for t in _suites_of(recs, "ant-emr-db1")}
    assert "test_database_answers_a_query" in tests
    verification = [r for r in recs if r["type"] == "verification" and r["step_id"] == "check-health:ant-emr-app1"]
    assert verification and verification[-1]["evidence"]["suites"] == _suites_of(recs, "ant-emr-app1")
    assert done["reconnect-segment:ant-servers"]["status"] == "verified"
    assert recs[-1]["type"] == "run-finished" and recs[-1]["status"] == "completed"
    assert orch(state_dir, "journal", "verify", last_run_id(state_dir)).returncode == 0


def test_a_failing_suite_keeps_its_segment_isolated_while_the_rest_returns(
    state_dir: Path, lab_inventory: Inventory, lab_run: Run, tmp_path: Path
) -> None:
    """emr-app stopped on ant-emr-app1, in a variant where the host lists only ssh as its service and
    has no power driver: the baseline (taken with emr-app stopped) and the service check both pass;
    only the EMR app suite sees that the application does not answer."""
    variant = lab_variant(tmp_path, "lab-suite-fails.yml", (
        "role: emr-app, tier: 2, depends_on: [ant-emr-db1, ant-ad1], services: [ssh, emr-app],\n"
        "                 vars: {service_ports: {emr-app: 8080}}, power: lab,",
        "role: emr-app, tier: 2, depends_on: [ant-emr-db1, ant-ad1], services: [ssh],\n"
        "                 vars: {service_ports: {emr-app: 8080}}, power: manual,"))
    lab_run("ant-emr-app1", "systemctl stop emr-app")
    try:
        res = orch(state_dir, "baseline", "capture", variant, "--host", "ant-emr-app1")
        assert res.returncode == 0, res.stdout + res.stderr
        res = orch(state_dir, "shutdown", variant, "--contain-only", "--campus", "antwerp", "--yes")
        assert res.returncode == 0, res.stdout + res.stderr
        contain_run = last_run_id(state_dir)
        res = orch(state_dir, "restore", variant, "--run", contain_run, "--approve", "all")
        assert res.returncode == 1, res.stdout + res.stderr
        recs = records(state_dir, last_run_id(state_dir))
        done = finished(recs)
        health = done["check-health:ant-emr-app1"]
        assert done["check-integrity:ant-emr-app1"]["status"] == "verified"
        assert health["status"] == "failed", health
        assert health["evidence"]["services"] == {"ssh": "active"} and health["evidence"]["ports_missing"] == []
        failed = {t["test"]: t for t in health["evidence"]["suites"] if t["outcome"] == "failed"}
        assert set(failed) == {"test_emr_app_service_is_running", "test_emr_app_answers_http_200"}
        assert "emr-app is not running" in failed["test_emr_app_service_is_running"]["message"]
        assert "health suite health/test_emr_app.py test_emr_app_answers_http_200 failed" in health["error"]
        assert "ant-emr-app1" in {r["host"] for r in recs if r["type"] == "quarantine"}
        reconnect = done["reconnect-segment:ant-servers"]
        assert reconnect["status"] == "failed" and "ant-emr-app1" in reconnect["evidence"]["blocking_hosts"]
        assert done["reconnect-segment:ant-ed"]["status"] == "verified"
        for host in ("ant-ad1", "ant-ad2", "ant-emr-db1", "ant-ed-dc1", "ant-ed-triage1"):
            suites = _suites_of(recs, host)
            assert suites and all(t["outcome"] == "passed" for t in suites), host
        # judged from inside: from the ED something beyond its gateway answers; ant-servers is still cut off
        assert done["reconnect-segment:ant-ed"]["evidence"]["after"].get("reaches_beyond")
        addr = lab_inventory.hosts["deu-ad1"].address
        assert lab_run("ant-ad1", f"ping -n -q -c 2 -i 0.2 -W 1 {addr}", check=False).rc != 0
    finally:
        lab_run("ant-emr-app1", "systemctl start emr-app", check=False)
        restore_lab(lab_inventory)
