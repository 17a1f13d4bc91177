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

The release file is written by the orchestrator into its own private directory (0700); only its
first word is read, and anything but ``stop`` or ``skip`` fails the task without sending anything.
"""

from __future__ import annotations

import os
import time

from ansible.plugins.action import ActionBase

_POLL_S = 0.02  # one open() attempt every 20 ms while waiting: a released host waits 10 ms on average


def _wait_for_release(path: str, wait_s: float) -> str | None:
    """The release file's first word once it exists, or None when ``wait_s`` passes first."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with open(path, encoding="ascii", errors="replace") as handle:
                words = handle.read(64).split()
            return words[0] if words else ""
        except FileNotFoundError:
            pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(_POLL_S)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("cmd", "executable", "release_file", "release_wait_s"))

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
        if self._task.check_mode:
            result["skipped"] = True
            return result
        result.update(self._low_level_execute_command(args.get("cmd"), executable=args.get("executable", False)))
        result["changed"] = True
        if "rc" in result and result["rc"] != 0:
            result["failed"] = True
            result["msg"] = "non-zero return code"
        return result
