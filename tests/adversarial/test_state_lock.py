"""Finding 16: a malformed lock file is a clear refusal (exit 3), never a traceback.

Malformed content is never judged stale: who wrote it is unknown, so a run may be going on. The
lock is refused with what is wrong, and a person removes it after checking.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.errors import LockHeldError
from orchestrator.lock import LockHolder, RunLock, read_lock

GOOD = {"pid": 4242, "host": "ctl", "user": "alice", "run_id": "r", "command": "shutdown", "started": "t",
        "proc_start": 1}


def test_a_lock_with_an_absurd_pid_is_refused_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "lock").write_text('{"pid": 1e400, "host": "x", "user": "u", "run_id": "r", "started": "s"}\n')
    with pytest.raises(LockHeldError, match="not the JSON this tool writes") as err:
        read_lock(state / "lock")
    assert "'pid' is not a process id" in str(err.value)
    with pytest.raises(LockHeldError):
        RunLock(state / "lock", "r2").acquire()
    assert (state / "lock").exists(), "a malformed lock is never removed automatically"
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "--state-dir", str(state), "status"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and "not the JSON this tool writes" in proc.stderr


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=200),
    _json.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(sorted(GOOD)), _json).map(lambda d: json.dumps({**GOOD, **d}).encode()),
    st.sampled_from([b'{"pid": 1e400, "host": "h"}', b'{"pid": NaN, "host": "h"}', b'{"pid": -Infinity}',
                     b'{"pid": ' + b"9" * 5000 + b', "host": "h"}', b"[" * 5000, b'{"pid": true, "host": "h"}',
                     b'{"pid": 4242, "host": "h", "proc_start": 1e400}']),
))
def test_the_lock_parser_returns_a_holder_or_refuses_clearly(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / f"lock-{os.urandom(4).hex()}"
    path.write_bytes(data)
    try:
        holder = read_lock(path)
    except LockHeldError as exc:
        assert "remove" in (exc.hint or "")
        return
    assert isinstance(holder, LockHolder)
    assert isinstance(holder.pid, int) and 0 < holder.pid < 2**23 and isinstance(holder.host, str)
