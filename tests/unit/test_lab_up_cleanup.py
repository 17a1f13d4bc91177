"""A failed ``orchestrator lab up`` (nspawn) leaves nothing running and keeps the consoles.

The VM provider's counterpart is in test_lab_vm.py. The removal itself (machines, bridges, routes)
is the one ``lab down`` runs; here it is recorded, so nothing needs root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import orchestrator.lab as lab
from orchestrator.errors import LabError
from orchestrator.inventory import load_inventory

REPO = Path(__file__).resolve().parents[2]
LAB_INV = REPO / "inventories" / "lab.yml"


@pytest.fixture
def lab_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "lab"
    monkeypatch.setattr(lab, "LAB_ROOT", root)
    monkeypatch.setattr(lab, "_require_host", lambda: None)
    for name in ("core1", "fw1"):
        (root / "machines" / name).mkdir(parents=True)
        (root / "machines" / name / "console.log").write_text(f"{name}: Failed to start sshd\n")
    return root


def test_a_failed_lab_up_removes_every_machine_and_bridge_and_keeps_the_consoles(
    lab_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    removed: list[object] = []

    def remove(inventory: object) -> list[str]:
        removed.append(inventory)
        return []

    def slow(*args: object) -> lab.LabStatus:
        raise LabError("2 machine(s) did not come up: core1: starting; fw1: starting", target="lab.yml")

    monkeypatch.setattr(lab, "_remove_locked", remove)
    monkeypatch.setattr(lab, "_up_locked", slow)
    inv = load_inventory(LAB_INV)
    with pytest.raises(LabError) as info:
        lab.lab_up(inv)
    assert removed == [inv]
    assert info.value.message.endswith("; removed everything it started")
    assert f"consoles kept in {lab_root / 'failed-up'}/NAME.log" in str(info.value.hint)
    kept = lab_root / "failed-up" / "core1.log"
    assert kept.read_text() == "core1: Failed to start sshd\n" and kept.stat().st_mode & 0o777 == 0o600
    assert (lab_root / "failed-up").stat().st_mode & 0o777 == 0o700

    monkeypatch.setattr(lab, "_up_locked", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        lab.lab_up(inv)
    assert len(removed) == 2, "Ctrl-C during lab up removes what it started too"


def test_a_failed_lab_up_names_what_it_could_not_remove(lab_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab, "_remove_locked", lambda inventory: ["link vb-core1"])
    monkeypatch.setattr(lab, "_up_locked", lambda *a: (_ for _ in ()).throw(LabError("boom", target="lab")))
    with pytest.raises(LabError, match="boom; could not remove: link vb-core1"):
        lab.lab_up(load_inventory(LAB_INV))


def test_a_refused_lab_up_never_removes_the_lab_that_is_up(lab_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lab, "_read_state", lambda: {"lab_id": "another", "inventory": "other.yml"})
    monkeypatch.setattr(lab, "_remove_locked", lambda inventory: pytest.fail("the running lab was removed"))
    with pytest.raises(LabError, match="different lab"):
        lab.lab_up(load_inventory(LAB_INV))


def test_the_machines_are_built_with_the_usual_umask_even_under_the_clis_private_one(
    lab_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []

    def record(*args: object) -> lab.LabStatus:
        current = os.umask(0o022)
        os.umask(current)
        seen.append(current)
        return lab.LabStatus(machines=())

    monkeypatch.setattr(lab, "_up_locked", record)
    previous = os.umask(0o077)  # what orchestrator.cli sets for everything the product writes
    try:
        lab.lab_up(load_inventory(LAB_INV))
        after = os.umask(0o077)
    finally:
        os.umask(previous)
    assert seen == [0o022], "a machine's networkd and dbus files must be readable by its own services"
    assert after == 0o077, "the CLI's private umask is back once the lab is up"
