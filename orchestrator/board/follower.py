"""Follow a run's journal as it is written: opened read-only, read from where it was left.

The board's only source. It never writes, locks or truncates the file (``open(path, "rb")``), it never
talks to the executor: a board that is slow, stuck or killed changes nothing for the run. A partial last
line (a record being written) waits for its newline. A journal that shrank or was replaced (``resume``
moving a torn line aside) is read again from the start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from orchestrator.config import Settings
from orchestrator.journal import JOURNAL_NAME

MAX_CHUNK = 4 * 1024 * 1024  # bytes read per poll at most (a huge journal is caught up over several polls)


def latest_run(settings: Settings) -> str | None:
    """The newest run id in the state directory (run ids sort by start time), or None."""
    try:
        names = sorted(p.name for p in settings.runs_dir.iterdir() if (p / JOURNAL_NAME).is_file())
    except OSError:
        return None
    return names[-1] if names else None


@dataclass
class JournalFollower:
    """Incremental reader of one journal file. :meth:`poll` returns True when new records arrived."""

    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _file: IO[bytes] | None = None
    _inode: tuple[int, int] | None = None
    _offset: int = 0
    _tail: bytes = b""

    def _reset(self) -> None:
        self.close()
        self.records = []
        self.problems = []
        self._offset = 0
        self._tail = b""

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self._inode = None

    def poll(self) -> bool:
        """Read what was appended since the last poll. True when the records changed."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self.records or self._file is not None:
                self._reset()
                return True
            return False
        inode = (st.st_dev, st.st_ino)
        changed = False
        if self._file is not None and (inode != self._inode or st.st_size < self._offset):
            self._reset()  # replaced or shrunk: read it again from the start
            changed = True
        if self._file is None:
            self._file = open(self.path, "rb")  # noqa: SIM115 - kept open between polls; read-only
            self._inode = (os.fstat(self._file.fileno()).st_dev, os.fstat(self._file.fileno()).st_ino)
        if st.st_size == self._offset:
            return changed
        self._file.seek(self._offset)
        data = self._file.read(MAX_CHUNK)
        self._offset += len(data)
        data = self._tail + data
        lines = data.split(b"\n")
        self._tail = lines.pop()  # b"" after a complete line, else a record still being written
        for number, raw in enumerate(lines, start=len(self.records) + len(self.problems) + 1):
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                self.problems.append(f"line {number} is not JSON: left out")
                continue
            if isinstance(record, dict):
                self.records.append(record)
                changed = True
            else:
                self.problems.append(f"line {number} is not a JSON object: left out")
        return changed


class RunSource:
    """Which journal the board follows: one run (``run_id``) or always the newest run (``None``), so a
    wall screen shows whatever runs now (a drill's shutdown, then its restore); with ``after``, only a
    run that started after that one (the board waits for the next run)."""

    def __init__(self, settings: Settings, run_id: str | None, *, after: str | None = None,
                 now_run: Callable[[], str | None] | None = None):
        self.settings = settings
        self.pinned = run_id
        self.after = after  # follow only runs newer than this one (``--next``)
        self._latest = now_run or (lambda: latest_run(settings))
        self.run_id: str | None = run_id
        self.follower: JournalFollower | None = (
            JournalFollower(settings.journal_path(run_id)) if run_id is not None else None)

    def poll(self) -> bool:
        changed = False
        if self.pinned is None:
            newest = self._latest()
            if newest is not None and self.after is not None and newest <= self.after:
                newest = None
            if newest is not None and newest != self.run_id:
                if self.follower is not None:
                    self.follower.close()
                self.run_id = newest
                self.follower = JournalFollower(self.settings.journal_path(newest))
                changed = True
        if self.follower is not None and self.follower.poll():
            changed = True
        return changed

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.follower.records if self.follower is not None else []

    @property
    def journal(self) -> str:
        return str(self.follower.path) if self.follower is not None else ""

    def close(self) -> None:
        if self.follower is not None:
            self.follower.close()
