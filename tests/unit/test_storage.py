"""The one place the product writes private files: exact modes whatever the umask, never a partial file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import storage


@pytest.fixture
def open_umask() -> Iterator[None]:
    previous = os.umask(0)  # the caller's umask must not widen (or narrow) what the product writes
    yield
    os.umask(previous)


def test_atomic_write_replaces_the_file_privately_and_leaves_no_temporary(tmp_path: Path, open_umask: object) -> None:
    path = tmp_path / "state" / "plan.json"
    storage.atomic_write(path, "first")
    storage.atomic_write(path, b"second")
    assert path.read_text() == "second"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["plan.json"]


def test_write_new_never_overwrites(tmp_path: Path, open_umask: object) -> None:
    path = tmp_path / "baselines" / "web1" / "20261202T200000Z.json"
    storage.write_new(path, "signed baseline")
    with pytest.raises(FileExistsError):
        storage.write_new(path, "a forged replacement")
    assert path.read_text() == "signed baseline"
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
