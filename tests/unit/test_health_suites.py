"""Health suites: the inventory's ``health:`` / ``health_suites:`` (checked, resolved), and the runner
against a real SSH server on loopback (paramiko's server side; each command runs with ``sh -c`` on
this machine): a real pytest child, real testinfra modules, the product's pinned paramiko client.
Nothing leaves 127.0.0.1."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from loopback_ssh import PASSWORD, USER, LoopbackSshServer, known_hosts_line

from orchestrator.errors import InventoryError
from orchestrator.health.check import check_health
from orchestrator.health.suites import SuiteOptions, run_host_suites, suite_problems
from orchestrator.inventory import validate_file
from orchestrator.model import Credential, Host, HostOs, Inventory, Scope, Site

SMALL = Path(__file__).resolve().parents[1] / "data" / "small.yml"
PASSING = "def test_echo(host):\n    assert host.run('echo hi').stdout.strip() == 'hi'\n"


# ---- inventory ----------------------------------------------------------------------------------


def _inventory_dir(tmp_path: Path, extra: str = "", host_health: str = "") -> Path:
    text = SMALL.read_text(encoding="utf-8")
    old = "role: emr-app, tier: 2, depends_on: [ant-emr-db1], credentials: lab}"
    assert text.count(old) == 1
    text = text.replace(old, old[:-1] + host_health + "}")
    path = tmp_path / "site" / "inventory.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + extra, encoding="utf-8")
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(InventoryError) as err:
        validate_file(path)
    return [p.render() for p in err.value.problems if p.severity == "error"]


def test_role_and_host_suites_resolve_against_the_inventory_directory(tmp_path: Path) -> None:
    path = _inventory_dir(tmp_path, "health_suites:\n  identity: [health/test_dir.py]\n"
                                    "  emr-app: [health/test_app.py]\n",
                          ", health: [health/test_app.py, health/extra/test_own.py]")
    (path.parent / "health" / "extra").mkdir(parents=True)
    for name in ("test_dir.py", "test_app.py", "extra/test_own.py"):
        (path.parent / "health" / name).write_text(PASSING)
    inv = validate_file(path).inventory
    base = str(path.parent)
    assert inv.base_dir == base
    assert inv.hosts["ant-ad1"].health == (f"{base}/health/test_dir.py",)
    assert inv.hosts["deu-ad1"].health == (f"{base}/health/test_dir.py",)
    # the role's first, then its own, each file once
    assert inv.hosts["ant-emr-app1"].health == (f"{base}/health/test_app.py", f"{base}/health/extra/test_own.py")
    assert inv.hosts["ant-emr-db1"].health == ()


def test_a_missing_suite_is_an_error_with_line_key_and_fix(tmp_path: Path) -> None:
    path = _inventory_dir(tmp_path, "health_suites:\n  identity: [health/test_gone.py]\n")
    [problem] = _problems(path)
    lines = path.read_text().splitlines()
    line = next(i for i, text in enumerate(lines, 1) if "test_gone" in text)
    assert problem.startswith(f"{path}:{line}: health_suites.identity[0]: suite ")
    assert "does not exist" in problem and "(fix: create it" in problem


@pytest.mark.parametrize(("entry", "says"), [
    ("../outside/test_x.py", "leaves the inventory's directory"),
    ("health/test_x.txt", "does not match the expected form"),
    ("-p/test_x.py", "not a plain file path"),
    ("health/a::test_x.py", "not a plain file path"),
    ("health", "does not match the expected form"),
])
def test_suite_paths_that_are_refused(tmp_path: Path, entry: str, says: str) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "test_x.py").write_text(PASSING)
    path = _inventory_dir(tmp_path, host_health=f", health: ['{entry}']")
    (path.parent / "health").mkdir()
    (path.parent / "health" / "test_x.txt").write_text(PASSING)
    problems = _problems(path)
    assert len(problems) == 1, problems
    assert "hosts.ant-emr-app1.health[0]" in problems[0] and says in problems[0], problems[0]


def test_an_absolute_suite_outside_the_directory_is_accepted(tmp_path: Path) -> None:
    elsewhere = tmp_path / "shared" / "test_common.py"
    elsewhere.parent.mkdir()
    elsewhere.write_text(PASSING)
    path = _inventory_dir(tmp_path, host_health=f", health: ['{elsewhere}']")
    assert validate_file(path).inventory.hosts["ant-emr-app1"].health == (str(elsewhere),)


def test_a_directory_is_not_a_suite_and_a_role_nobody_has_is_a_warning(tmp_path: Path) -> None:
    path = _inventory_dir(tmp_path, "health_suites:\n  nobody: [health/test_a.py]\n  identity: [health/d.py]\n")
    (path.parent / "health" / "d.py").mkdir(parents=True)
    (path.parent / "health" / "test_a.py").write_text(PASSING)
    problems = _problems(path)
    assert len(problems) == 1 and "health_suites.identity[0]" in problems[0] and "is not a file" in problems[0]
    (path.parent / "health" / "d.py").rmdir()
    (path.parent / "health" / "d.py").write_text(PASSING)
    warnings = [w.render() for w in validate_file(path).warnings]
    assert any("health_suites.nobody" in w and "no host has role 'nobody'" in w for w in warnings), warnings


# ---- the runner, over real SSH on loopback ------------------------------------------------------


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    d = tmp_path_factory.mktemp("keys")
    client = paramiko.ECDSAKey.generate()
    key_file = d / "id_ecdsa"
    client.write_private_key_file(str(key_file))
    return {"host": paramiko.ECDSAKey.generate(), "client": client, "key_file": key_file}


@pytest.fixture
def server(keys: dict[str, Any]) -> Iterator[LoopbackSshServer]:
    srv = LoopbackSshServer(keys["host"], keys["client"])
    yield srv
    srv.stop()


def _loopback_inventory(tmp_path: Path, cred: Credential, suites: dict[str, str], os_: HostOs = HostOs.LINUX
                        ) -> Inventory:
    base = tmp_path / "site"
    (base / "health").mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in suites.items():
        (base / "health" / name).write_text(text)
        paths.append(str(base / "health" / name))
    lo = ipaddress.IPv4Address("127.0.0.1")
    host = Host(name="web1", segment="servers", address=lo, management_address=lo, credentials=cred.name,
                health=tuple(paths), os=os_)
    return Inventory(path=str(base / "inventory.yml"), sha256="0" * 64, site=Site("t"), management_segment="mgmt",
                     campuses={}, segments={}, devices={}, links={}, hosts={"web1": host}, islands={},
                     credentials={cred.name: cred}, base_dir=str(base))


def _pinned(tmp_path: Path, server: LoopbackSshServer, keys: dict[str, Any], **kw: Any) -> Credential:
    known = tmp_path / "known_hosts"
    known.write_text(known_hosts_line(server.port, keys["host"]))
    return Credential("c", USER, key_file=str(keys["key_file"]), known_hosts=str(known), **kw)


MIXED = """
import pytest

def test_passes(host):
    assert host.file('/').is_directory

def test_fails(host):
    out = host.check_output('echo the-answer-was-$((6*7))')
    assert out == 'the-answer-was-41', 'wrong answer: ' + out

def test_skipped(host):
    pytest.skip('not on this host')

@pytest.fixture
def broken():
    raise RuntimeError('fixture broke')

def test_errors(host, broken):
    pass
"""


def test_each_test_outcome_duration_and_message_come_back(tmp_path: Path, server: LoopbackSshServer,
                                                          keys: dict[str, Any]) -> None:
    inv = _loopback_inventory(tmp_path, _pinned(tmp_path, server, keys), {"test_mixed.py": MIXED})
    result = run_host_suites(inv, "web1", SuiteOptions(port=server.port))
    by_test = {t.test: t for t in result.tests}
    assert {n: t.outcome for n, t in by_test.items()} == {
        "test_passes": "passed", "test_fails": "failed", "test_skipped": "skipped", "test_errors": "error"}
    assert all(t.suite == "health/test_mixed.py" for t in result.tests)
    assert "wrong answer: the-answer-was-42" in by_test["test_fails"].message  # computed on the "host"
    assert by_test["test_skipped"].message == "not on this host"
    assert "fixture broke" in by_test["test_errors"].message
    assert all(isinstance(t.duration_s, float) and t.duration_s >= 0 for t in result.tests)
    assert not result.passed and result.counts() == {"passed": 1, "failed": 1, "error": 1, "skipped": 1}
    assert [p.split(":")[0] for p in suite_problems(result)] == [
        "health suite health/test_mixed.py test_fails failed", "health suite health/test_mixed.py test_errors error"]
    assert server.connections >= 1
    assert not list((tmp_path / "site" / "health").glob("__pycache__")), "nothing written beside the suites"


def test_an_unknown_host_key_is_refused_and_every_test_is_an_error(tmp_path: Path, server: LoopbackSshServer,
                                                                   keys: dict[str, Any]) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(known_hosts_line(server.port, paramiko.ECDSAKey.generate()))  # pins another key
    cred = Credential("c", USER, key_file=str(keys["key_file"]), known_hosts=str(known))
    inv = _loopback_inventory(tmp_path, cred, {"test_ok.py": PASSING})
    result = run_host_suites(inv, "web1", SuiteOptions(port=server.port))
    [test] = result.tests
    assert test.outcome == "error" and "host key mismatch" in test.message, test


def test_no_password_goes_to_a_suspect_host_and_secrets_are_masked(
    tmp_path: Path, server: LoopbackSshServer, keys: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HS_PW", PASSWORD)
    known = tmp_path / "known_hosts"
    known.write_text(known_hosts_line(server.port, keys["host"]))
    cred = Credential("c", USER, password_env="HS_PW", known_hosts=str(known))
    leak = f"def test_leak(host):\n    assert False, 'the password is {PASSWORD}'\n"
    inv = _loopback_inventory(tmp_path, cred, {"test_ok.py": PASSING, "test_leak.py": leak})
    suspect = run_host_suites(inv, "web1", SuiteOptions(port=server.port))
    assert {t.outcome for t in suspect.tests} == {"error"}
    assert "refusing to send credential" in suspect.tests[0].message
    assert server.passwords_offered == 0
    trusted = run_host_suites(inv, "web1", SuiteOptions(port=server.port, suspect=False))
    assert [t.outcome for t in trusted.tests] == ["passed", "failed"]
    assert PASSWORD not in trusted.tests[1].message and "***" in trusted.tests[1].message


def test_a_suite_past_its_timeout_is_stopped_and_keeps_what_it_finished(
    tmp_path: Path, server: LoopbackSshServer, keys: dict[str, Any]
) -> None:
    slow = PASSING + "\ndef test_hangs(host):\n    host.run('sleep 60')\n"
    inv = _loopback_inventory(tmp_path, _pinned(tmp_path, server, keys), {"test_slow.py": slow})
    started = time.monotonic()
    result = run_host_suites(inv, "web1", SuiteOptions(port=server.port, suite_timeout_s=12))
    assert time.monotonic() - started < 30
    assert [(t.test, t.outcome) for t in result.tests] == [("test_echo", "passed"), ("(suite)", "error")]
    assert "did not finish within 12 s" in result.tests[1].message


@pytest.mark.parametrize(("text", "says"), [
    ("def helper(host):\n    pass\n", "no tests collected"),
    ("def test_x(host):\n    assert (\n", "SyntaxError"),
])
def test_a_suite_that_tests_nothing_or_does_not_load_is_an_error(
    tmp_path: Path, server: LoopbackSshServer, keys: dict[str, Any], text: str, says: str
) -> None:
    inv = _loopback_inventory(tmp_path, _pinned(tmp_path, server, keys), {"test_bad.py": text})
    [test] = run_host_suites(inv, "web1", SuiteOptions(port=server.port)).tests
    assert test.outcome == "error" and says in test.message, test


def test_hostile_output_stays_text_and_is_trimmed(tmp_path: Path, server: LoopbackSshServer,
                                                  keys: dict[str, Any]) -> None:
    noisy = ("def test_noise(host):\n"
             "    out = host.check_output('printf \"[red]x[/red] password: hunter2hunter2\\\\n%.0s\" $(seq 50)')\n"
             "    assert False, out\n")
    inv = _loopback_inventory(tmp_path, _pinned(tmp_path, server, keys), {"test_noise.py": noisy})
    [test] = run_host_suites(inv, "web1", SuiteOptions(port=server.port)).tests
    assert test.outcome == "failed"
    assert "hunter2hunter2" not in test.message  # a secret-looking line loses its value
    assert len(test.message) <= 700 and "more lines" in test.message


def test_health_check_runs_hosts_with_suites_and_lists_the_rest(tmp_path: Path, server: LoopbackSshServer,
                                                                keys: dict[str, Any]) -> None:
    inv = _loopback_inventory(tmp_path, _pinned(tmp_path, server, keys), {"test_ok.py": PASSING})
    result = check_health(inv, Scope(), options=SuiteOptions(port=server.port))
    assert result.passed and [h.host for h in result.hosts] == ["web1"]
    doc = result.as_dict()
    assert doc["hosts"]["web1"]["tests"] == [
        {"suite": "health/test_ok.py", "test": "test_echo", "outcome": "passed",
         "duration_s": doc["hosts"]["web1"]["tests"][0]["duration_s"], "message": ""}]


def test_a_windows_host_gets_no_ssh_suites(tmp_path: Path, server: LoopbackSshServer, keys: dict[str, Any]) -> None:
    inv = _loopback_inventory(tmp_path, _pinned(tmp_path, server, keys), {"test_ok.py": PASSING}, HostOs.WINDOWS)
    result = check_health(inv, Scope(), options=SuiteOptions(port=server.port))
    [h] = result.hosts
    assert h.tests == () and "never reached over SSH" in h.not_run and result.passed
    assert server.connections == 0
