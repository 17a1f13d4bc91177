"""The pytest plugin of a health-suite child process (``orchestrator.health.suites`` starts it).

It gives suites the ``host`` fixture of pytest-testinfra, connected to the one host named in
``--orchestrator-target`` (a JSON file: the host's address and its credential, references only,
never a secret) through the product's own SSH client: paramiko with the credential's pinned
known_hosts and RejectPolicy (an unknown or changed host key is refused, never learnt), and no
password for a host presumed compromised unless the credential allows it. testinfra's own paramiko
backend would accept unknown host keys (WarningPolicy), so it is not used; testinfra's plugin is not
loaded at all (plugin autoloading is off in the child).

Each test's outcome is appended, as one JSON line, to ``--orchestrator-results`` as soon as it is
known: a suite killed at its timeout still leaves what it finished.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testinfra.backend.base import BaseBackend, CommandResult
from testinfra.host import Host as TestinfraHost

from orchestrator.drivers.ssh import SshDriver
from orchestrator.errors import OrchestratorError
from orchestrator.model import Credential, Host, Inventory, Site


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("orchestrator", "orchestrator health suites")
    group.addoption("--orchestrator-target", required=True, help="JSON file: the host and its credential")
    group.addoption("--orchestrator-results", required=True, help="JSON lines file the outcomes go to")


class PinnedParamikoBackend(BaseBackend):  # type: ignore[misc]  # testinfra is untyped here
    """A testinfra backend whose every command goes through the product's pinned paramiko client."""

    NAME = "paramiko"  # what suites asking host.backend.get_connection_type() see

    def __init__(self, driver: SshDriver, name: str, command_timeout_s: float) -> None:
        super().__init__(name)
        self._driver = driver
        self._name = name
        self._timeout_s = command_timeout_s

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
        cmd = self.get_command(command, *args)
        res = self._driver.run(self._name, cmd, timeout_s=self._timeout_s)
        return self.result(res.exit_status, self.encode(cmd), res.stdout, res.stderr)


def _driver(target: dict[str, Any]) -> tuple[SshDriver, str]:
    """An SSH driver that knows the one host of ``target`` (and treats it as suspect if told)."""
    cred = Credential(**target["credential"])
    name = str(target["host"])
    host = Host(name=name, segment="-", address=_ip(target["address"]), management_address=_ip(target["address"]),
                credentials=cred.name)
    inventory = Inventory(path=str(target["inventory"]), sha256="", site=Site("-"), management_segment="-",
                          campuses={}, segments={}, devices={}, links={}, hosts={name: host}, islands={},
                          credentials={cred.name: cred})
    driver = SshDriver(inventory, float(target["connect_timeout_s"]), port=int(target["port"]))
    if target.get("suspect"):
        driver.treat_as_suspect([name])
    return driver, name


def _ip(text: str) -> Any:
    import ipaddress

    return ipaddress.IPv4Address(text)


@pytest.fixture(scope="session")
def host(pytestconfig: pytest.Config) -> Iterator[TestinfraHost]:
    """The host under test (testinfra's ``host``). Connecting is part of the setup: a host that cannot
    be reached makes each test an error, not a failure."""
    target = json.loads(Path(pytestconfig.getoption("orchestrator_target")).read_text(encoding="utf-8"))
    driver, name = _driver(target)
    try:
        driver.run(name, "true", timeout_s=float(target["command_timeout_s"]))
    except OrchestratorError as exc:
        driver.close()
        raise RuntimeError(f"cannot reach {name} over SSH: {exc}") from None
    backend = PinnedParamikoBackend(driver, name, float(target["command_timeout_s"]))
    testinfra_host = TestinfraHost(backend)
    backend.set_host(testinfra_host)
    try:
        yield testinfra_host
    finally:
        driver.close()


def _message(report: pytest.TestReport | pytest.CollectReport) -> str:
    """What went wrong (or why it was skipped), in short: the exception's own line(s)."""
    longrepr = report.longrepr
    if longrepr is None:
        return ""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (file, line, "Skipped: why")
        return str(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        # the assertion and its message; pytest's "+  where ..." introspection lines are left out
        return "\n".join(line for line in str(crash.message).splitlines() if not line.lstrip().startswith("+"))
    return str(longrepr).strip().splitlines()[-1] if str(longrepr).strip() else ""


class _Writer:
    def __init__(self, path: str) -> None:
        self._path = Path(path)

    def write(self, test: str, outcome: str, duration_s: float, message: str) -> None:
        line = json.dumps({"test": test, "outcome": outcome, "duration_s": round(duration_s, 3),
                           "message": message}, ensure_ascii=False)
        with self._path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name = report.nodeid.split("::", 1)[-1]
        if report.when == "call":
            self.write(name, "passed" if report.passed else "skipped" if report.skipped else "failed",
                       report.duration, _message(report))
        elif report.failed:  # setup or teardown: the test could not be judged
            self.write(name, "error", report.duration, f"{report.when}: {_message(report)}")
        elif report.skipped and report.when == "setup":
            self.write(name, "skipped", report.duration, _message(report))

    @pytest.hookimpl
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            text = str(report.longrepr).strip().splitlines()
            self.write("(collection)", "error", 0.0, "\n".join(text[-5:]))


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_Writer(config.getoption("orchestrator_results")), "orchestrator-results")
