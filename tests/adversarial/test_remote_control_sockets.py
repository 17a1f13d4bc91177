"""Finding 9: SSH control sockets only ever live in a private directory of the running user's.

A directory someone else could have made first (a guessable /tmp name), made open to others, or
replaced by a symbolic link is refused with a clear error, never reused: whoever controls it could
use or replace the connections Ansible and the control masters run over. The manual fallback's
ansible.cfg keeps its sockets in the user's own directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from orchestrator.drivers import ssh_masters
from orchestrator.drivers.ansible import AnsibleDriver
from orchestrator.errors import DriverError
from orchestrator.inventory import load_inventory
from orchestrator.model import Inventory

REPO = Path(__file__).resolve().parents[2]
OTHER_UID = 4242


@pytest.fixture
def inventory() -> Inventory:
    return load_inventory(REPO / "tests" / "data" / "small.yml")


def planted(path: Path, how: str, tmp_path: Path) -> Path:
    """A control directory someone else prepared: world-writable, a symlink, or another user's."""
    if how == "mode-0777":
        path.mkdir()
        path.chmod(0o777)
    elif how == "symlink":
        target = tmp_path / "elsewhere"
        target.mkdir(mode=0o700)
        path.symlink_to(target)
    elif how == "other-uid":
        path.mkdir(mode=0o700)
        if os.geteuid() != 0:
            pytest.fail("giving a directory to another uid needs root (CI runs the adversarial tier as root)")
        os.chown(path, OTHER_UID, OTHER_UID)
    return path


HOW = ["mode-0777", "symlink", "other-uid"]


@pytest.mark.parametrize("how", HOW)
def test_a_planted_control_directory_is_refused_by_the_ansible_driver(
    inventory: Inventory, tmp_path: Path, how: str
) -> None:
    short = Path(tempfile.mkdtemp(prefix="adv-", dir="/tmp"))  # WORK/cp short enough to be used as is
    try:
        work = short / "w"
        work.mkdir(mode=0o700)
        planted(work / "cp", how, tmp_path)
        driver = AnsibleDriver(inventory, work)
        with pytest.raises(DriverError) as info:
            driver.control_path_dir()
        assert "refusing the SSH control directory" in str(info.value) and info.value.hint
    finally:
        shutil.rmtree(short)


@pytest.mark.parametrize("how", HOW)
def test_a_planted_control_directory_is_refused_by_the_control_masters(
    inventory: Inventory, tmp_path: Path, how: str
) -> None:
    with pytest.raises(DriverError):
        ssh_masters.SshMasters(inventory, planted(tmp_path / "cp", how, tmp_path))


def test_a_long_work_dir_gets_a_fresh_private_directory_not_a_guessable_one(
    inventory: Inventory, tmp_path: Path
) -> None:
    deep = tmp_path / ("x" * 80)
    first = AnsibleDriver(inventory, deep)
    second = AnsibleDriver(inventory, deep)
    one, two = first.control_path_dir(), second.control_path_dir()
    assert one != two, "the name is not derived from the work dir (nobody can make it first)"
    for d in (one, two):
        st = os.lstat(d)
        assert st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o700
        assert len(str(d)) + 9 + 41 + 17 < 108  # ControlPath: DIR/RUN/%C + ssh's temporary suffix
    first.close()
    second.close()
    assert not one.exists() and not two.exists()


def test_the_fallback_config_keeps_control_sockets_in_the_users_own_directory(tmp_path: Path) -> None:
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path),
           "ANSIBLE_CONFIG": str(REPO / "playbooks" / "ansible.cfg"), "ANSIBLE_HOME": str(tmp_path / "ah")}
    dump = subprocess.run([str(Path(sys.executable).parent / "ansible-config"), "dump", "-t", "connection",
                           "-t", "all", "--only-changed"],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert dump.returncode == 0, dump.stderr
    lines = [line for line in dump.stdout.splitlines() if "control_path_dir" in line.lower()]
    assert lines, dump.stdout
    assert all("/tmp" not in line for line in lines), lines
    assert any("~/.ansible/cp" in line or str(tmp_path) in line for line in lines), lines
