"""The board as a child process beside a long command (the drill): started, its link read, stopped.

A separate process on purpose: whatever the board does (a slow browser, a crash, a kill), the run in the
parent only ever appends to its journal, which the board reads.
"""

from __future__ import annotations

import contextlib
import select
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import UsageError

START_TIMEOUT_S = 30.0
URL_PREFIX = "board: "


@dataclass
class BoardProcess:
    process: subprocess.Popen[str]
    url: str

    def stop(self, timeout_s: float = 5.0) -> None:
        """End the board (this process's own child, by its handle)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_board_process(state_dir: Path, *, listen: str = "127.0.0.1:0", run_id: str | None = None,
                        timeout_s: float = START_TIMEOUT_S) -> BoardProcess:
    """Start ``orchestrator board`` on loopback, following the next run to start and those after it (or
    ``run_id``); its link."""
    argv = [sys.executable, "-m", "orchestrator", "--state-dir", str(state_dir), "board",
            *([run_id] if run_id else ["--next"]), "--listen", listen]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=False)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith(URL_PREFIX):
        with contextlib.suppress(OSError):
            proc.kill()
        proc.wait(timeout=5)
        proc.stdout.close()
        raise UsageError("the board did not start" + (f": {line.strip()}" if line else f" within {timeout_s:.0f} s"),
                         target="orchestrator board", hint="run `orchestrator board --latest` by hand to see why")
    return BoardProcess(proc, line[len(URL_PREFIX):].strip())
