"""The state file and lock both labs share (nspawn: ``LAB_ROOT/lab.json``, VMs: ``vm-lab.json``):
one implementation, each lab's own words in its errors."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

import orchestrator.lab as nspawn_lab
from orchestrator.errors import LabError
from orchestrator.inventory import load_inventory
from orchestrator.lab import statefile
from orchestrator.lab.vm import host

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def vm_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> statefile.LabStateFile:
    monkeypatch.setenv(host.VM_LAB_ROOT_ENV, str(tmp_path / "vm-lab"))
    return host.state()


def test_the_state_is_written_whole_and_private_and_read_back(vm_state: statefile.LabStateFile) -> None:
    assert vm_state.read() is None
    vm_state.write({"lab_id": "a", "machines": ["m1"]})
    assert vm_state.read() == {"lab_id": "a", "machines": ["m1"]}
    assert stat.S_IMODE(vm_state.path.stat().st_mode) == 0o600
    assert [p.name for p in vm_state.root.iterdir()] == ["vm-lab.json"], "no temporary file left"
    vm_state.remove()
    assert vm_state.read() is None


def test_an_unreadable_state_names_the_way_out(vm_state: statefile.LabStateFile) -> None:
    vm_state.root.mkdir(parents=True)
    vm_state.path.write_text("{half")
    with pytest.raises(LabError, match="cannot read") as info:
        vm_state.read()
    assert info.value.hint == "run `orchestrator lab down --provider vagrant` to remove the VM lab and its state"


def test_each_lab_says_no_lab_is_up_in_its_own_words(vm_state: statefile.LabStateFile, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(LabError) as info:
        vm_state.require()
    assert info.value.message == "no VM lab is up"
    assert info.value.hint == "run `orchestrator lab up INVENTORY --provider vagrant`"
    monkeypatch.setattr(nspawn_lab, "LAB_ROOT", tmp_path / "lab")
    with pytest.raises(LabError) as info:
        nspawn_lab.running_machines()
    assert info.value.message == "no lab is up"
    assert info.value.hint == "run `orchestrator lab up` first"


def test_another_inventorys_lab_is_refused(vm_state: statefile.LabStateFile) -> None:
    inventory = load_inventory(REPO / "inventories" / "vm-lab.yml")
    vm_state.refuse_other(None, "mine", inventory)
    vm_state.refuse_other({"lab_id": "mine"}, "mine", inventory)
    with pytest.raises(LabError) as info:
        vm_state.refuse_other({"lab_id": "theirs", "inventory": "other.yml"}, "mine", inventory)
    assert info.value.message == "a different VM lab is up (from other.yml)"
    assert info.value.hint == "run `orchestrator lab down --provider vagrant` first; one VM lab at a time"
    assert info.value.target == inventory.path


def test_the_lock_is_exclusive(vm_state: statefile.LabStateFile) -> None:
    import fcntl

    with vm_state.locked(), (vm_state.root / "lock").open("a") as other, pytest.raises(BlockingIOError):
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with (vm_state.root / "lock").open("a") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released


def test_running_machines_reads_the_state_again_only_when_it_was_replaced(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The power driver asks at every poll: an unchanged state file is not parsed again, a replaced
    one (write_state: a new file) always is."""
    monkeypatch.setattr(nspawn_lab, "LAB_ROOT", tmp_path / "lab")
    path = tmp_path / "lab" / nspawn_lab.STATE_FILE
    statefile.write_state(path, {"image": "/img/a", "machines": ["m1", "m2"]})
    parsed: list[Path] = []
    real_read = statefile.read_state

    def counting_read(p: Path, **kw: str) -> dict[str, object] | None:
        parsed.append(p)
        return real_read(p, **kw)

    monkeypatch.setattr(statefile, "read_state", counting_read)
    assert nspawn_lab.running_machines() == (Path("/img/a"), ["m1", "m2"])
    names = nspawn_lab.running_machines()[1]
    names.append("not-kept")  # a caller's list is its own
    assert nspawn_lab.running_machines() == (Path("/img/a"), ["m1", "m2"])
    assert len(parsed) == 1
    statefile.write_state(path, {"image": "/img/a", "machines": ["m1", "m2", "m3"]})
    assert nspawn_lab.running_machines() == (Path("/img/a"), ["m1", "m2", "m3"])
    assert len(parsed) == 2
    path.unlink()
    with pytest.raises(LabError, match="no lab is up"):
        nspawn_lab.running_machines()
