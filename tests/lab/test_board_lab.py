"""The crisis cell's board watches a real shutdown of the lab, in Debian's headless Chromium driven by
Playwright: nodes change colour as hosts go off, the containment time appears, the final state is what
`orchestrator status --json` says; a browser without the token is refused; the board is killed mid-run
and the run completes unaffected. Screenshots go to reports/board-*.png (kept as CI artifacts)."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import CLI, LAB_YML, REPO, last_run_id, records, restore_lab

from orchestrator import lab
from orchestrator.model import Inventory

ARTIFACTS = REPO / "reports"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
# Every render of the graph leaves what each node showed in window.__seen ("host=state").
WATCH_JS = """() => {
  window.__seen = new Set();
  const note = () => document.querySelectorAll('#graph g.node').forEach(
    n => window.__seen.add(n.dataset.host + '=' + n.dataset.state));
  note();
  new MutationObserver(note).observe(document.getElementById('graph'), {childList: true});
}"""

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make setup installs it)")


@pytest.fixture
def lab_back_afterwards(lab_up_status: lab.LabStatus, lab_inventory: Inventory) -> Iterator[None]:
    """Leave the lab as found: every machine running, no isolation or cut in force."""
    yield
    restore_lab(lab_inventory, wait_ssh=False)


def start_board(state_dir: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([CLI, "--state-dir", str(state_dir), "board", *args, "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            cwd=REPO)
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline() if ready else ""
    assert line.startswith("board: http://127.0.0.1:"), line
    return proc, line.removeprefix("board: ").strip()


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def node_states(page: Any) -> dict[str, str]:
    states: dict[str, str] = page.eval_on_selector_all(
        "#graph g.node", "ns => Object.fromEntries(ns.map(n => [n.dataset.host, n.dataset.state]))")
    return states


def shot(page: Any, name: str) -> None:
    """The whole page, and what a screen shows of it (the top: times and the graph)."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"board-{name}.png"), full_page=True)
    page.screenshot(path=str(ARTIFACTS / f"board-{name}-screen.png"))


def test_the_board_watches_a_shutdown_and_killing_it_changes_nothing_for_the_run(
    tmp_path: Path, lab_inventory: Inventory, lab_back_afterwards: None
) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM is not None
    state_dir = tmp_path / "state"
    board, url = start_board(state_dir, "--next")
    run: subprocess.Popen[str] | None = None
    later: subprocess.Popen[str] | None = None
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            try:
                page = browser.new_context(viewport={"width": 1100, "height": 1040}).new_page()
                page.goto(url)
                page.wait_for_function("() => document.getElementById('status').textContent === 'waiting for a run'")

                run = subprocess.Popen([CLI, "--state-dir", str(state_dir), "shutdown", LAB_YML, "--yes"],
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       text=True, cwd=REPO)
                page.wait_for_selector("#graph g.node", timeout=60_000)
                page.evaluate(WATCH_JS)
                # containment time appears while the run goes on
                page.wait_for_function("() => document.getElementById('ttc').textContent !== '-'", timeout=300_000)
                # ... and hosts go off, one by one
                page.wait_for_selector("#graph g.node[data-state='stopped']", timeout=300_000)
                assert run.poll() is None, "the run ended before the board could be killed mid-run"
                mid = node_states(page)
                assert page.text_content("#status") == "running"
                assert page.get_attribute("#graph g.node[data-state='stopped'] rect", "fill") == "#64748b"
                shot(page, "mid-run")

                # kill the board (its process, by PID) in the middle of the run
                os.kill(board.pid, signal.SIGKILL)
                board.wait(timeout=10)
                page.wait_for_function("() => document.getElementById('link').dataset.live === 'no'", timeout=15_000)
                out, _ = run.communicate(timeout=600)
                assert run.returncode == 0, out
                run_id = last_run_id(state_dir)
                recs = records(state_dir, run_id)
                assert recs[-1]["type"] == "run-finished" and recs[-1]["status"] == "completed"

                seen: list[str] = page.evaluate("() => Array.from(window.__seen)")
                went_off = {h for h, s in mid.items() if s == "stopped"}
                assert any(f"{h}=running" in seen or f"{h}=stopping" in seen for h in went_off), seen

                # a board started again shows the final state, as `orchestrator status` tells it
                later, url2 = start_board(state_dir, run_id)
                page.goto(url2)
                page.wait_for_function("() => document.getElementById('status').textContent === 'completed'",
                                       timeout=30_000)
                status = json.loads(subprocess.run(
                    [CLI, "--state-dir", str(state_dir), "status", run_id, "--json"], capture_output=True, text=True,
                    check=True, cwd=REPO).stdout)
                assert status["status"] == "completed" and status["left"] == []
                assert page.text_content("#ttc") == f"{status['time_to_containment_s']:.1f} s"
                assert page.text_content("#tts") == f"{status['time_to_shutdown_s']:.1f} s"
                assert page.text_content("#run-id") == run_id
                final = node_states(page)
                kept = lab_inventory.keep_reasons()
                for name in lab_inventory.hosts:
                    assert final[name] == ("kept-running" if name in kept else "stopped"), (name, final[name])
                assert "none" in (page.text_content("#left") or "")
                for name in kept:
                    assert name in (page.text_content("#kept") or "")
                shot(page, "final")

                # a second browser without the token is refused
                stranger = browser.new_context().new_page()
                for path in ("/", "/events", "/state.json"):
                    response = stranger.goto(url2.split("/?", 1)[0] + path)
                    assert response is not None and response.status == 403, path
            finally:
                browser.close()
    finally:
        for proc in (board, later, run):
            if proc is not None:
                if proc is run and proc.poll() is None:
                    proc.wait(timeout=600)
                stop(proc)
