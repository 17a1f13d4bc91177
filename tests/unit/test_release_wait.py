"""The armed stop run's wait for a release (``playbooks/action_plugins/raw_when_released.py``): woken
by the kernel when the file appears instead of polling, never fooled by a file not yet written, and a
released worker takes the orchestrator's CPU priority back before it sends anything."""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from orchestrator.drivers.ansible import ARMED_NICE_STEP, armed_release_nice
from orchestrator.storage import write_new

PLUGIN = Path(__file__).resolve().parents[2] / "playbooks" / "action_plugins" / "raw_when_released.py"


@pytest.fixture(scope="module")
def plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("raw_when_released", PLUGIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def later(seconds: float, action: object) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        action()  # type: ignore[operator]

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def counting_reads(plugin: ModuleType, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    reads: list[str] = []
    real = plugin._read_release

    def read(path: str) -> str | None:
        reads.append(path)
        word: str | None = real(path)
        return word

    monkeypatch.setattr(plugin, "_read_release", read)
    return reads


def test_a_release_wakes_the_wait_without_polling(plugin: ModuleType, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    reads = counting_reads(plugin, monkeypatch)
    release = tmp_path / "ant-db1"
    writer = later(1.2, lambda: write_new(release, "stop\n"))  # as the orchestrator writes it: linked in whole
    assert plugin._wait_for_release(str(release), 30) == "stop"
    writer.join()
    # polling every 20 ms would have looked ~60 times; woken by inotify: the first look, the once-a-second
    # look, the look after the wake-up (and one per temporary-file event of the writer)
    assert len(reads) <= 6, len(reads)


def test_another_hosts_release_only_costs_one_look(plugin: ModuleType, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    mine, other = tmp_path / "ant-db1", tmp_path / "ant-db2"
    writers = [later(0.3, lambda: write_new(other, "stop\n")), later(0.6, lambda: write_new(mine, "skip\n"))]
    assert plugin._wait_for_release(str(mine), 30) == "skip"
    for writer in writers:
        writer.join()


def test_other_hosts_releases_in_their_own_directories_never_wake_the_wait(
        plugin: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As the orchestrator arms a shutdown: one directory per host. Forty other releases cost this
    worker nothing (one shared directory woke every worker at every release: N x N looks)."""
    reads = counting_reads(plugin, monkeypatch)
    others = [tmp_path / f"ant-app{i}" / "verdict" for i in range(40)]
    mine = tmp_path / "ant-db1" / "verdict"
    for path in [*others, mine]:
        path.parent.mkdir()

    def release_the_others() -> None:
        for path in others:
            write_new(path, "stop\n")

    writers = [later(0.1, release_the_others), later(0.6, lambda: write_new(mine, "stop\n"))]
    assert plugin._wait_for_release(str(mine), 30) == "stop"
    for writer in writers:
        writer.join()
    # the first look, then its own release's three events (temporary file, its close, the link)
    assert len(reads) <= 4, len(reads)


def test_a_file_created_but_not_yet_written_is_waited_on(plugin: ModuleType, tmp_path: Path) -> None:
    release = tmp_path / "ant-db1"

    def write_in_two_steps() -> None:
        handle = release.open("w")  # created empty, as `echo stop > file` would in a shell
        time.sleep(0.4)
        handle.write("stop\n")
        handle.close()

    writer = later(0.2, write_in_two_steps)
    assert plugin._wait_for_release(str(release), 30) == "stop"  # not "": that would fail the host's task
    writer.join()


def test_without_a_release_the_wait_ends_with_nothing(plugin: ModuleType, tmp_path: Path) -> None:
    started = time.monotonic()
    assert plugin._wait_for_release(str(tmp_path / "ant-db1"), 0.5) is None
    assert time.monotonic() - started >= 0.5


def test_without_inotify_the_wait_polls(plugin: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugin, "_watch", lambda directory: None)
    reads = counting_reads(plugin, monkeypatch)
    release = tmp_path / "ant-db1"
    writer = later(0.5, lambda: write_new(release, "stop\n"))
    assert plugin._wait_for_release(str(release), 30) == "stop"
    writer.join()
    assert len(reads) > 10  # every 20 ms


def in_thread(action: object) -> object:
    """``action()`` in a thread of its own: a thread's priority is its own, the test's stays as it is."""
    box: list[object] = []
    thread = threading.Thread(target=lambda: box.append(action()))  # type: ignore[operator]
    thread.start()
    thread.join()
    return box[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="raising a priority again needs root")
def test_a_released_worker_takes_the_orchestrators_priority_back(plugin: ModuleType) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert armed_release_nice() == base

    def lowered_then_released() -> tuple[int, int]:
        os.setpriority(os.PRIO_PROCESS, 0, min(19, base + ARMED_NICE_STEP))  # as forked from the armed run
        lowered = os.getpriority(os.PRIO_PROCESS, 0)
        plugin._take_priority_back(str(base))  # the playbook passes it as text
        return lowered, os.getpriority(os.PRIO_PROCESS, 0)

    assert in_thread(lowered_then_released) == (min(19, base + ARMED_NICE_STEP), base)


@pytest.mark.parametrize("nice", [None, "", "-21", "20", "zero", "0; rm -rf /"])
def test_a_priority_that_is_not_the_orchestrators_is_ignored(plugin: ModuleType, nice: str | None) -> None:
    def lowered_then_refused() -> int:
        os.setpriority(os.PRIO_PROCESS, 0, 15)
        plugin._take_priority_back(nice)
        return os.getpriority(os.PRIO_PROCESS, 0)

    assert in_thread(lowered_then_refused) == 15
