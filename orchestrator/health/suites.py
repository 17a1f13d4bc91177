"""Run a host's health suites (pytest-testinfra files the site owns) against it, and collect each
test's outcome.

Each suite runs in a child process of its own (``python -m pytest``: pytest is not thread-safe
in-process, and a child can be killed at its timeout), one host's suites one after the other, hosts
in parallel. The child logs in through ``orchestrator.health.plugin``: the product's paramiko client
with the credential's pinned known_hosts, RejectPolicy, and no password for a suspect host. It
reads a JSON file naming the host and its credential (references only: a secret is read by the
child from where the credential says, as the parent would) and appends one JSON line per test to a
results file (a plugin of our own rather than --junitxml: the outcomes arrive as they happen, so a
suite killed at its timeout keeps what it finished, and no XML written from untrusted host output
has to be parsed back).

The child sees no pytest configuration but its own: an empty ini file of ours, plugin autoloading
off, no cache, no bytecode written next to the suites, only the conftest.py in the suite's own
directory. What comes back (test names, assertion messages, the child's own output) is untrusted
text: masked (known secrets, secret-looking lines) and trimmed before anyone sees it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestrator import storage
from orchestrator.inventory.health import suite_label
from orchestrator.masking import Masker
from orchestrator.model import Host, Inventory

OUTCOMES = ("passed", "failed", "error", "skipped")
MESSAGE_CAP = 600  # characters of one test's message kept (the assertion, not a traceback)
MESSAGE_LINES = 6
DEFAULT_SUITE_TIMEOUT_S = 120.0
DEFAULT_COMMAND_TIMEOUT_S = 30.0
_CHILD_ENV_DROPPED = ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTHONSTARTUP", "PYTHONINSPECT")
_INI = "[pytest]\naddopts =\n"


@dataclass(frozen=True)
class TestOutcome:
    """One test of one suite: the shape of ``evidence["suites"]`` items (see :meth:`as_dict`)."""

    __test__ = False  # not a pytest test class, whatever its name

    suite: str  # the suite's path relative to the inventory's directory (absolute when outside it)
    test: str
    outcome: str  # passed | failed | error | skipped
    duration_s: float
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HostSuites:
    """A host's suites and their tests' outcomes. ``not_run``: why none ran (a host never sent SSH)."""

    host: str
    suites: tuple[str, ...]
    tests: tuple[TestOutcome, ...]
    duration_s: float
    not_run: str = ""

    @property
    def passed(self) -> bool:
        """No test failed or errored (skips are no failure; a host without suites passes)."""
        return all(t.outcome in ("passed", "skipped") for t in self.tests)

    @property
    def failures(self) -> tuple[TestOutcome, ...]:
        return tuple(t for t in self.tests if t.outcome in ("failed", "error"))

    def counts(self) -> dict[str, int]:
        return {o: sum(1 for t in self.tests if t.outcome == o) for o in OUTCOMES}


@dataclass(frozen=True)
class SuiteOptions:
    suite_timeout_s: float = DEFAULT_SUITE_TIMEOUT_S  # one suite, its child process killed after this
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S  # one command a test sends the host
    connect_timeout_s: float = 5.0  # the credential's connect_timeout_s wins when set
    suspect: bool = True  # the host may be compromised: no password unless its credential allows it
    port: int = 22


NO_SSH = "never reached over SSH (os: windows, or a hypervisor powered through vCenter): no suites run"


def suites_apply(host: Host) -> bool:
    """Whether a host's suites run (over SSH: a host never sent SSH gets none)."""
    return bool(host.health) and not host.never_ssh


def suite_problems(result: HostSuites) -> list[str]:
    """One line per failed or errored test: ``suite test: outcome: first line of its message``."""
    return [f"health suite {t.suite} {t.test} {t.outcome}" + (f": {t.message.splitlines()[0]}" if t.message else "")
            for t in result.failures]


def run_host_suites(inventory: Inventory, host_name: str, options: SuiteOptions | None = None,
                    masker: Masker | None = None) -> HostSuites:
    """Run every suite of ``host_name`` against it, one after the other; never raises for what a
    suite or the host does (that is an outcome)."""
    options = options or SuiteOptions()
    host = inventory.hosts[host_name]
    labels = tuple(suite_label(s, inventory.base_dir) for s in host.health)
    if host.never_ssh and host.health:
        return HostSuites(host_name, labels, (), 0.0, not_run=NO_SSH)
    masker = masker or _masker(inventory)
    started = time.monotonic()
    tests: list[TestOutcome] = []
    with tempfile.TemporaryDirectory(prefix="orchestrator-health-") as tmp:  # 0700, removed after
        work = Path(tmp)
        target = work / "target.json"
        storage.write_new(target, json.dumps(_target(inventory, host, options)))
        ini = work / "pytest.ini"
        storage.write_new(ini, _INI)
        for n, (suite, label) in enumerate(zip(host.health, labels, strict=True)):
            results = work / f"results-{n}.jsonl"
            tests += _run_suite(suite, label, ini, target, results, options, masker)
    return HostSuites(host_name, labels, tuple(tests), round(time.monotonic() - started, 3))


def run_suites(inventory: Inventory, hosts: Iterable[str], options: SuiteOptions | None = None,
               forks: int = 16) -> dict[str, HostSuites]:
    """Every named host's suites, hosts in parallel (``forks`` at a time), by host name."""
    names = sorted(set(hosts))
    masker = _masker(inventory)
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(names) or 1))) as pool:
        done = list(pool.map(lambda h: run_host_suites(inventory, h, options, masker), names))
    return {r.host: r for r in done}


def _masker(inventory: Inventory) -> Masker:
    from orchestrator.runs import collect_secrets

    return Masker(collect_secrets(inventory))


def _target(inventory: Inventory, host: Host, options: SuiteOptions) -> dict[str, Any]:
    """What the child needs to log in: the address and the credential (references, never a secret)."""
    return {"host": host.name, "address": str(host.management_address), "port": options.port,
            "inventory": inventory.path, "credential": asdict(inventory.credentials[host.credentials]),
            "connect_timeout_s": options.connect_timeout_s, "command_timeout_s": options.command_timeout_s,
            "suspect": options.suspect}


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV_DROPPED}
    env.update({"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1", "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def _argv(suite: str, ini: Path, target: Path, results: Path) -> list[str]:
    here = os.path.dirname(suite)
    return [sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", here, "--confcutdir", here,
            "-p", "orchestrator.health.plugin", "-p", "no:cacheprovider", "-q", "--no-header", "-rN",
            "--color=no", "--import-mode=importlib", "--orchestrator-target", str(target),
            "--orchestrator-results", str(results), "--", suite]


def _run_suite(suite: str, label: str, ini: Path, target: Path, results: Path, options: SuiteOptions,
               masker: Masker) -> list[TestOutcome]:
    started = time.monotonic()
    proc = subprocess.Popen(_argv(suite, ini, target, results), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=_child_env(), cwd=os.path.dirname(suite),
                            start_new_session=True)
    timed_out = False
    try:
        output, _ = proc.communicate(timeout=options.suite_timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)  # the child we started, and whatever it started
        output, _ = proc.communicate()
    tests = [_outcome(label, item, masker) for item in _read_results(results)]
    elapsed = time.monotonic() - started
    if timed_out:
        tests.append(TestOutcome(label, "(suite)", "error", round(elapsed, 3),
                                 f"the suite did not finish within {options.suite_timeout_s:g} s and was stopped"))
    elif proc.returncode == 5 and not tests:
        tests.append(TestOutcome(label, "(suite)", "error", round(elapsed, 3),
                                 "no tests collected: a suite that tests nothing proves nothing "
                                 "(name test functions test_*)"))
    elif proc.returncode not in (0, 1) and not any(t.outcome == "error" for t in tests):
        tail = "\n".join(output.decode("utf-8", errors="replace").strip().splitlines()[-5:])
        tests.append(TestOutcome(label, "(suite)", "error", round(elapsed, 3),
                                 _clean(f"pytest exited {proc.returncode}: {tail}", masker)))
    elif proc.returncode == 1 and not tests:
        tests.append(TestOutcome(label, "(suite)", "error", round(elapsed, 3),
                                 "pytest reported a failure but no test outcome"))
    return tests


def _read_results(path: Path) -> Sequence[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill at the timeout
        if isinstance(item, dict):
            out.append(item)
    return out


def _outcome(label: str, item: dict[str, Any], masker: Masker) -> TestOutcome:
    outcome = str(item.get("outcome"))
    try:
        duration = float(item.get("duration_s", 0.0))
    except (TypeError, ValueError):
        duration = 0.0
    return TestOutcome(label, _clean(str(item.get("test", "?")), masker, 200),
                       outcome if outcome in OUTCOMES else "error", round(duration, 3),
                       _clean(str(item.get("message", "")), masker))


def _clean(text: str, masker: Masker, cap: int = MESSAGE_CAP) -> str:
    """Untrusted text as it may be shown: known secrets and secret-looking lines masked, trimmed
    (at most :data:`MESSAGE_LINES` lines and ``cap`` characters)."""
    lines = masker.text(text).strip().splitlines()
    text = "\n".join(lines[:MESSAGE_LINES]) + (f"\n... [{len(lines) - MESSAGE_LINES} more lines]"
                                               if len(lines) > MESSAGE_LINES else "")
    return text if len(text) <= cap else text[:cap] + f"... [{len(text) - cap} characters dropped]"
