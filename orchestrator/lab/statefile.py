"""Plumbing the labs share: an exclusive lock on a file, a JSON state file written atomically, and
:class:`LabStateFile`, one lab's state file and lock (the nspawn lab's and the VM lab's)."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator import storage
from orchestrator.errors import LabError
from orchestrator.model import Inventory


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created, with its folder, when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_state(path: Path, *, target: str, hint: str) -> dict[str, Any] | None:
    """The state in ``path``, or None when there is none; a file that cannot be read is a LabError."""
    if not path.exists():
        return None
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LabError(f"cannot read {path}: {exc}", target=target, hint=hint) from exc
    return state


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Replace ``path`` with ``state`` at once (a reader sees the old state or the new, never half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.atomic_write(path, json.dumps(state, indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class LabStateFile:
    """One lab's state (``ROOT/NAME``, JSON) and its lock (``ROOT/lock``), and the refusals both labs
    share: another lab is up, no lab is up. ``label`` names the lab in messages ("lab", "VM lab"),
    ``target`` in errors; ``down`` and ``up_hint`` say how to remove one and how to bring one up."""

    root: Path
    name: str
    label: str
    target: str
    down: str
    up_hint: str

    @property
    def path(self) -> Path:
        return self.root / self.name

    @contextmanager
    def locked(self) -> Iterator[None]:
        with locked(self.root / "lock"):
            yield

    def read(self) -> dict[str, Any] | None:
        return read_state(self.path, target=self.target,
                          hint=f"run `{self.down}` to remove the {self.label} and its state")

    def write(self, state: dict[str, Any]) -> None:
        write_state(self.path, state)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def require(self) -> dict[str, Any]:
        """The state of the lab that is up; none: LabError."""
        state = self.read()
        if state is None:
            raise LabError(f"no {self.label} is up", target=self.target, hint=self.up_hint)
        return state

    def refuse_other(self, state: dict[str, Any] | None, lab_id: str, inventory: Inventory) -> None:
        """Refuse to touch a lab of another inventory (one lab of a kind at a time)."""
        if state is not None and state.get("lab_id") != lab_id:
            raise LabError(
                f"a different {self.label} is up (from {state.get('inventory', '?')})",
                target=inventory.path,
                hint=f"run `{self.down}` first; one {self.label} at a time",
            )
