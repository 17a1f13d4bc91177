"""The run lock: one run per state directory; the holder is named; stale locks are recognised."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import EXIT_INTERLOCK, LockHeldError
from orchestrator.lock import LockHolder, RunLock, read_lock


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def plant(path: Path, **fields: object) -> None:
    data = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "user": "someone",
        "run_id": "20260113T053200Z-old000",
        "started": "2026-01-13T05:32:00Z",
        "command": "shutdown inventories/lab.yml",
    }
    data.update(fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def test_lock_file_names_the_holder_and_is_removed_on_exit(tmp_path: Path) -> None:
    path = tmp_path / "state" / "lock"
    with RunLock(path, "20260113T053200Z-abcdef", command="shutdown lab.yml") as lock:
        assert lock.held and lock.stale is None
        data = json.loads(path.read_text())
        assert data["pid"] == os.getpid()
        assert data["host"] == socket.gethostname()
        assert data["run_id"] == "20260113T053200Z-abcdef"
        assert data["user"] and data["started"].endswith("Z")
        assert read_lock(path) == lock.holder
    assert not path.exists()
    assert read_lock(path) is None
    assert not list(path.parent.glob(".lock.*")), "temporary files are cleaned up"


def test_second_acquire_is_refused_naming_the_holder(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    with RunLock(path, "20260113T053200Z-first0"):
        with pytest.raises(LockHeldError) as err:
            RunLock(path, "20260113T053300Z-second").acquire()
        assert err.value.exit_code == EXIT_INTERLOCK == 3
        text = str(err.value)
        assert f"pid {os.getpid()}" in text and "20260113T053200Z-first0" in text
        assert path.exists()
    with RunLock(path, "20260113T053400Z-third0"):  # free again once released
        pass


_HOLDER = """
import sys, time
from orchestrator.lock import RunLock
with RunLock(sys.argv[1], "20260113T053200Z-child0"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_lock_held_by_another_process_is_refused_and_goes_stale_when_it_dies(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        with pytest.raises(LockHeldError, match=f"pid {proc.pid}"):
            RunLock(path, "mine").acquire()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert path.exists()  # SIGKILL leaves the lock behind
    with RunLock(path, "mine") as lock:
        assert lock.stale is not None
        assert lock.stale.holder.pid == proc.pid
        assert lock.stale.holder.run_id == "20260113T053200Z-child0"
        assert "no longer exists" in lock.stale.reason
        assert json.loads(path.read_text())["run_id"] == "mine"


def test_stale_lock_of_a_dead_pid_is_taken_over_and_described(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    pid = dead_pid()
    plant(path, pid=pid)
    lock = RunLock(path, "new-run")
    stale = lock.acquire()
    try:
        assert stale is not None and stale is lock.stale
        assert stale.holder.pid == pid
        assert f"process {pid} no longer exists" in stale.reason
        journaled = stale.as_dict()
        assert journaled["pid"] == pid and journaled["run_id"] == "20260113T053200Z-old000"
        assert "reason" in journaled
    finally:
        lock.release()


def test_reused_pid_is_recognised_as_stale(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    plant(path, pid=os.getpid(), proc_start=1)  # this pid, but a process started long before us
    with RunLock(path, "new-run") as lock:
        assert lock.stale is not None and "another process" in lock.stale.reason


def test_lock_from_another_host_is_never_judged(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    plant(path, pid=dead_pid(), host="other-laptop")
    with pytest.raises(LockHeldError) as err:
        RunLock(path, "new-run").acquire()
    assert "other-laptop" in str(err.value)
    assert err.value.hint is not None and "by hand" in err.value.hint
    assert path.exists()


def test_unreadable_lock_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    path.write_text("garbage")
    with pytest.raises(LockHeldError) as err:
        RunLock(path, "new-run").acquire()
    assert err.value.hint is not None and "remove" in err.value.hint


def test_release_never_removes_someone_elses_lock(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    lock = RunLock(path, "mine")
    lock.acquire()
    path.unlink()  # someone broke our lock by hand and another run took it
    plant(path, run_id="theirs")
    lock.release()
    assert path.exists() and json.loads(path.read_text())["run_id"] == "theirs"


def test_holder_round_trips_and_describes_itself() -> None:
    holder = LockHolder(
        pid=42, host="laptop", user="oncall", run_id="r1", started="2026-01-13T05:32:00Z", command="shutdown"
    )
    assert LockHolder.from_dict(holder.as_dict()) == holder
    assert holder.describe() == "pid 42 oncall@laptop, run r1 (shutdown), since 2026-01-13T05:32:00Z"
