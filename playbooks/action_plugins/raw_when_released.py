"""``raw_when_released``: Ansible's ``raw``, sent only once the orchestrator releases this host.

Used by stop-host.yml. Without ``release_file`` (the playbook run by hand) it is ``raw``: the command
is sent at once. With it, the task waits on the controller, without touching the host, until that
file appears:

* ``stop``: the command is sent (as ``raw`` would: one SSH command, no module, no Python on the host);
* ``skip``: nothing is sent, the task is skipped (the orchestrator decided this host is not stopped
  here: already off, SSH not answering, a dependent that failed to stop, the run ending);
* nothing within ``release_wait_s`` seconds: nothing is sent, the task fails.

This lets the orchestrator start one ``ansible-playbook`` for every host of a shutdown ahead of time
and release each host the moment everything that depends on it is verified off, instead of paying
the start of a new ``ansible-playbook`` for each batch of hosts that become ready together. The
absence of a release is the safe default: a run whose orchestrator died stops nothing.

The release file is written by the orchestrator into a private directory (0700) of the host's own
(``RELEASE_DIR/HOST/verdict``); only its first word is read, and anything but ``stop`` or ``skip``
fails the task without sending anything (an empty file is one not written yet: still waited on). The
wait sleeps in the kernel (inotify on that directory: another host's release does not wake it) where
it can, and polls every 20 ms where it cannot.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import time

from ansible.plugins.action import ActionBase

_POLL_S = 0.02  # without inotify: one open() attempt every 20 ms (a released host waits 10 ms on average)
_RECHECK_S = 1.0  # with inotify: the file is still looked for once a second, whatever the events say
# <sys/inotify.h>: a name created (the orchestrator links its release file in whole), moved in, or a
# file in the directory closed after writing (a release file written in place, by hand)
_IN_CREATE, _IN_MOVED_TO, _IN_CLOSE_WRITE = 0x100, 0x80, 0x8
_IN_CLOEXEC, _IN_NONBLOCK = os.O_CLOEXEC, os.O_NONBLOCK  # inotify_init1's flags are the open(2) flags


def _read_release(path: str) -> str | None:
    """The release file's first word, or None while it does not exist or is still empty (created,
    not yet written: a word is written in one go, so a file with one is complete)."""
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            words = handle.read(64).split()
    except FileNotFoundError:
        return None
    return words[0] if words else None


def _watch(directory: str) -> int | None:
    """An inotify descriptor that becomes readable when a name appears in ``directory``, or None
    where inotify is not available (not Linux, no libc, out of watches): then the wait polls.

    A worker waiting for its release then sleeps in the kernel instead of waking 50 times a second:
    a shutdown arms one worker per host, and 90 workers polling took 0.28 s of CPU per second of
    waiting (14 % of a 2-core controller), CPU the executor's probes and Ansible's forking needed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = int(libc.inotify_init1(_IN_CLOEXEC | _IN_NONBLOCK))
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    if int(libc.inotify_add_watch(fd, os.fsencode(directory), _IN_CREATE | _IN_MOVED_TO | _IN_CLOSE_WRITE)) < 0:
        os.close(fd)
        return None
    return fd


def _wait_for_release(path: str, wait_s: float) -> str | None:
    """The release file's first word once it exists, or None when ``wait_s`` passes first.

    The watch is set before the first look, so a file created in between is not missed; any other
    event in the directory (the writer's temporary file; another host's release, where hosts share a
    directory) only leads to one more look."""
    deadline = time.monotonic() + wait_s
    fd = _watch(os.path.dirname(path))
    try:
        while True:
            verdict = _read_release(path)
            if verdict is not None:
                return verdict
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if fd is None:
                time.sleep(min(_POLL_S, remaining))
                continue
            readable, _, _ = select.select([fd], [], [], min(_RECHECK_S, remaining))
            if readable:
                with contextlib.suppress(BlockingIOError):  # drained: only the wake-up is needed
                    os.read(fd, 65536)
    finally:
        if fd is not None:
            os.close(fd)


def _take_priority_back(nice: object) -> None:
    """The orchestrator's priority, taken back at the release: the run waited at a lower one (it is
    preparation, started ahead), the stop command it now sends is the critical path. The value comes
    from the orchestrator's extra vars (an inventory cannot set ``stop_host_release_*``); anything but
    a nice value (an integer from -20 to 19) is ignored, and one that cannot be set (no privilege)
    leaves the worker where it was."""
    if nice is None or nice == "":
        return
    try:
        value = int(str(nice))
    except ValueError:
        return
    if -20 <= value <= 19:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, value)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("cmd", "executable", "release_file", "release_wait_s", "release_nice"))

    def run(self, tmp=None, task_vars=None):  # type: ignore[no-untyped-def]
        result = super().run(tmp, task_vars or {})
        del tmp
        args = self._task.args
        release_file = str(args.get("release_file") or "")
        if release_file:
            if not os.path.isabs(release_file):
                result.update(failed=True, msg="release_file must be an absolute path: nothing was sent")
                return result
            wait_s = float(args.get("release_wait_s") or 3600)
            verdict = _wait_for_release(release_file, wait_s)
            if verdict is None:
                result.update(failed=True, msg=f"not released within {wait_s:g} s: nothing was sent")
                return result
            if verdict == "skip":
                result.update(skipped=True, skip_reason="not released by the orchestrator: nothing was sent")
                return result
            if verdict != "stop":
                result.update(failed=True, msg="the release file says neither stop nor skip: nothing was sent")
                return result
            _take_priority_back(args.get("release_nice"))
        if self._task.check_mode:
            result["skipped"] = True
            return result
        result.update(self._low_level_execute_command(args.get("cmd"), executable=args.get("executable", False)))
        result["changed"] = True
        if "rc" in result and result["rc"] != 0:
            result["failed"] = True
            result["msg"] = "non-zero return code"
        return result
