"""The run lock: one run per state directory at a time.

``STATE_DIR/lock`` holds JSON ``{pid, host, user, run_id, command, started, proc_start}``. It is made
complete in a temporary file and then hard-linked into place, which is atomic and fails when a lock
exists, so nobody ever reads a half-written lock. The holder also keeps ``fcntl.flock`` on it while
it runs.

A second run is refused with :class:`LockHeldError` naming the holder. A lock whose holder was on this
host and is gone (its pid does not exist, or the pid now belongs to a process started later) is
*stale*: it is taken over automatically, and :attr:`RunLock.stale` describes what was found so the
executor can journal it (``lock-taken-over``). A lock from another host is never judged: it is
refused, with a hint on how to remove it by hand.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import getpass
import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator import storage
from orchestrator.errors import LockHeldError

_TAKEOVER_ATTEMPTS = 5
_PID_LIMIT = 2**22 + 1  # Linux's pid_max is at most 4,194,304
_LOCK_MAX_BYTES = 64 * 1024  # a lock this tool writes is a few hundred bytes


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a lock."""

    pid: int
    host: str
    user: str
    run_id: str
    started: str
    command: str = ""
    proc_start: int | None = None  # the holder's start time in clock ticks since boot (Linux)

    def describe(self) -> str:
        run = f", run {self.run_id}" if self.run_id else ""
        what = f" ({self.command})" if self.command else ""
        return f"pid {self.pid} {self.user}@{self.host}{run}{what}, since {self.started}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "host": self.host,
            "user": self.user,
            "run_id": self.run_id,
            "command": self.command,
            "started": self.started,
            "proc_start": self.proc_start,
        }

    @classmethod
    def from_dict(cls, data: Any) -> LockHolder:
        """Strict: exactly the shapes this tool writes, else ValueError naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("the lock is not a JSON object")
        pid = data.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid < _PID_LIMIT:
            raise ValueError(f"'pid' is not a process id: {str(pid)[:40]!r}")
        host = data.get("host")
        if not isinstance(host, str) or not host:
            raise ValueError("'host' is missing or not a string")
        texts = {k: data.get(k, "") for k in ("user", "run_id", "started", "command")}
        for k, v in texts.items():
            if not isinstance(v, str):
                raise ValueError(f"{k!r} is not a string")
        proc_start = data.get("proc_start")
        if proc_start is not None and (not isinstance(proc_start, int) or isinstance(proc_start, bool)
                                       or not 0 <= proc_start < 2**63):
            raise ValueError(f"'proc_start' is not a clock-tick count: {str(proc_start)[:40]!r}")
        return cls(pid=pid, host=host, user=texts["user"], run_id=texts["run_id"], started=texts["started"],
                   command=texts["command"], proc_start=proc_start)


@dataclass(frozen=True)
class StaleLock:
    """A lock that was found stale and taken over."""

    holder: LockHolder
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {**self.holder.as_dict(), "reason": self.reason}


def _proc_start(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), if known."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _whoami() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def stale_reason(holder: LockHolder, host: str | None = None) -> str | None:
    """Why this holder is certainly gone, or None if it may still be running."""
    if holder.host != (host or socket.gethostname()):
        return None
    if not _pid_alive(holder.pid):
        return f"process {holder.pid} no longer exists on {holder.host}"
    if holder.proc_start is not None:
        now_start = _proc_start(holder.pid)
        if now_start is not None and now_start != holder.proc_start:
            return f"pid {holder.pid} now belongs to another process (started later than the lock's holder)"
    return None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def read_lock(path: Path) -> LockHolder | None:
    """The current holder, or None when there is no lock. Raises LockHeldError if it is unreadable."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_LOCK_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LockHeldError(
            f"cannot read the run lock: {exc.strerror or exc}",
            target=str(path),
            hint="check the state directory's permissions",
        ) from exc
    # Malformed content is never judged stale: whoever wrote it is unknown, so a run may be going on.
    # It is refused (exit 3) with what is wrong, and a person removes it after checking.
    try:
        if len(raw) > _LOCK_MAX_BYTES:
            raise ValueError(f"the lock is larger than {_LOCK_MAX_BYTES} bytes")
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
        return LockHolder.from_dict(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise LockHeldError(
            f"the run lock exists but is not the JSON this tool writes ({str(exc)[:200]})",
            target=str(path),
            hint=f"make sure no run is going on (`orchestrator status`, `ps`), then remove {path} by hand",
        ) from None


class RunLock:
    """``with RunLock(settings.lock_path, run_id=...) as lock:`` holds the state directory.

    Raises LockHeldError (exit 3) when another live run holds it. After entering, ``lock.stale`` is
    the stale lock that was taken over (journal it), or None.
    """

    def __init__(self, path: Path, run_id: str = "", *, command: str = "") -> None:
        self.path = Path(path)
        self.run_id = run_id
        self.command = command
        self.stale: StaleLock | None = None
        self.holder: LockHolder | None = None
        self._fd: int | None = None
        self._inode: tuple[int, int] | None = None

    # -- acquiring -------------------------------------------------------------------------

    def _me(self) -> LockHolder:
        pid = os.getpid()
        return LockHolder(
            pid=pid,
            host=socket.gethostname(),
            user=_whoami(),
            run_id=self.run_id,
            started=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            command=self.command,
            proc_start=_proc_start(pid),
        )

    def _try_create(self, me: LockHolder) -> bool:
        """Atomically put a complete lock file in place. False if one exists."""
        tmp = self.path.with_name(f".{self.path.name}.{me.pid}.{time.monotonic_ns()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (json.dumps(me.as_dict(), sort_keys=True) + "\n").encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # someone took it over between link and flock: practically impossible
            return False
        st = os.fstat(fd)
        self._fd, self._inode = fd, (st.st_dev, st.st_ino)
        self.holder = me
        with contextlib.suppress(OSError):
            dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return True

    def _held(self, holder: LockHolder) -> LockHeldError:
        if holder.host == socket.gethostname():
            hint = f"wait for it to finish, or check it with `orchestrator status`; it is pid {holder.pid} here"
        else:
            hint = (
                f"the holder is on another host ({holder.host}) and cannot be checked from here; if no run "
                f"is going on there, remove {self.path} by hand"
            )
        return LockHeldError(
            f"another run holds the state directory: {holder.describe()}", target=str(self.path), hint=hint
        )

    def _remove_stale(self, holder: LockHolder) -> bool:
        """Unlink the stale lock file if it is still the one judged. False if it changed under us."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return True
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return False  # a live process holds it (another run taking over right now)
                raise
            try:
                st = os.fstat(fd)
                now = os.stat(self.path)
            except FileNotFoundError:
                return True
            if (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino) or read_lock(self.path) != holder:
                return False
            self.path.unlink()
            return True
        finally:
            os.close(fd)

    def acquire(self) -> StaleLock | None:
        """Take the lock; returns the stale lock taken over, if any."""
        if self._fd is not None:
            raise LockHeldError("this lock object is already held", target=str(self.path))
        try:
            storage.private_mkdir(self.path.parent)
        except OSError as exc:
            raise LockHeldError(
                f"cannot create the state directory: {exc.strerror or exc}", target=str(self.path.parent)
            ) from exc
        me = self._me()
        stale: StaleLock | None = None
        for _ in range(_TAKEOVER_ATTEMPTS):
            try:
                if self._try_create(me):
                    self.stale = stale
                    return stale
            except OSError as exc:
                raise LockHeldError(
                    f"cannot write the run lock: {exc.strerror or exc}",
                    target=str(self.path),
                    hint="check that the state directory is writable",
                ) from exc
            holder = read_lock(self.path)
            if holder is None:
                continue  # released meanwhile
            reason = stale_reason(holder)
            if reason is None:
                raise self._held(holder)
            if self._remove_stale(holder):
                stale = StaleLock(holder, reason)
            else:
                time.sleep(0.05)
        holder = read_lock(self.path)
        if holder is not None:
            raise self._held(holder)
        raise LockHeldError("could not take the run lock (contended)", target=str(self.path), hint="try again")

    def release(self) -> None:
        """Remove the lock if it is still ours; never removes someone else's."""
        if self._fd is None:
            return
        try:
            with contextlib.suppress(FileNotFoundError):
                now = os.stat(self.path)
                if (now.st_dev, now.st_ino) == self._inode:
                    self.path.unlink()
        finally:
            os.close(self._fd)
            self._fd = None
            self._inode = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
