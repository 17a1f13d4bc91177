"""Lab fixtures shared by the lab tier (tests/lab) and the adversarial tier (tests/adversarial).

Registered for every tier by tests/conftest.py (``pytest_plugins``), so one nspawn lab, built from
inventories/lab.yml, serves the whole test session and is torn down at its end. Fixtures are lazy:
a unit test never builds the lab.

Fixtures:
- ``lab_inventory``: the loaded inventories/lab.yml.
- ``lab_up_status``: the LabStatus returned by ``lab_up`` (session).
- ``lab_status``: a fresh LabStatus (function scope: machines may have been powered off and on).
- ``lab_run``: ``lab_run(machine, command, check=True) -> LabResult``, SSH as root with the lab's
  pinned keys (paramiko, RejectPolicy).
- ``lab_ssh``: a ``PinnedSsh`` (``client(address)``, ``run_at(address, machine, command)``, ``wait(address)``)
  for machines addressed directly, e.g. while one is powered off and on.
- ``lab_host``: ``lab_host(machine) -> testinfra.host.Host`` over the ssh backend with strict host keys.

Set ORCHESTRATOR_LAB_KEEP=1 to leave the lab up after the session (for poking at it by hand).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import testinfra
from pinned_ssh import PinnedSsh, RemoteCommandError, RemoteResult
from testinfra.host import Host

from orchestrator import lab
from orchestrator.inventory import load_inventory
from orchestrator.lab import keys
from orchestrator.model import Inventory

REPO = Path(__file__).resolve().parents[1]
LAB_INVENTORY = REPO / "inventories" / "lab.yml"


LabResult = RemoteResult
LabCommandError = RemoteCommandError
LAB_SSH = PinnedSsh(lab.LAB_ROOT)  # SSH helpers with the lab's pinned keys, by management address


@pytest.fixture
def lab_ssh(lab_up_status: lab.LabStatus) -> PinnedSsh:
    return LAB_SSH


@pytest.fixture(scope="session")
def lab_inventory() -> Inventory:
    return load_inventory(LAB_INVENTORY)


@pytest.fixture(scope="session")
def lab_up_status(lab_inventory: Inventory) -> Iterator[lab.LabStatus]:
    if os.geteuid() != 0:
        pytest.fail("the lab tests need root (containers, bridges, mounts); CI runs them as root")
    missing = lab.missing_system_packages()
    if missing:
        pytest.fail("missing system packages for the lab: " + " ".join(missing) + " (run `make setup`)")
    status = lab.lab_up(lab_inventory)
    yield status
    if not os.environ.get("ORCHESTRATOR_LAB_KEEP"):
        lab.lab_down(lab_inventory)


@pytest.fixture
def lab_status(lab_inventory: Inventory, lab_up_status: lab.LabStatus) -> lab.LabStatus:
    return lab.lab_status(lab_inventory)


@pytest.fixture
def lab_run(lab_up_status: lab.LabStatus) -> Callable[..., LabResult]:
    return LAB_SSH.runner({m.name: m.management_address for m in lab_up_status.machines})


@pytest.fixture(scope="session")
def lab_ssh_config(lab_up_status: lab.LabStatus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lab-ssh") / "ssh_config"
    path.write_text(
        "Host *\n"
        "  User root\n"
        f"  IdentityFile {keys.client_key_path(lab.LAB_ROOT)}\n"
        "  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {keys.known_hosts_path(lab.LAB_ROOT)}\n"
        "  StrictHostKeyChecking yes\n"
        "  BatchMode yes\n"
        "  ConnectTimeout 10\n"
    )
    return path


@pytest.fixture
def lab_host(lab_up_status: lab.LabStatus, lab_ssh_config: Path) -> Callable[[str], Host]:
    addresses = {m.name: m.management_address for m in lab_up_status.machines}

    def host(machine: str) -> Host:
        return testinfra.get_host(f"ssh://root@{addresses[machine]}", ssh_config=str(lab_ssh_config))

    return host
