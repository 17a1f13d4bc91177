"""The board in a real browser: Debian's headless Chromium driven by Playwright (its Python package ships
its own driver; the browser is the system's, nothing is downloaded). The page is served by uvicorn on
127.0.0.1 from a journal with hostile strings, which must show as text and never run."""

from __future__ import annotations

import importlib.util
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from orchestrator.board.app import Board, bind, make_server, parse_listen
from orchestrator.board.follower import RunSource
from orchestrator.config import Settings
from orchestrator.journal import Journal

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or importlib.util.find_spec("playwright") is None,
    reason="needs Debian's chromium (make setup) and the playwright package (dev extras)",
)
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
TOKEN = "c" * 43


def _journals() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_board_journals", Path(__file__).with_name("test_board.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


J = _journals()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Journal]]:
    settings = Settings.resolve(str(tmp_path / "state"))
    settings.run_dir(J.RUN_ID).mkdir(parents=True)
    journal = J.start_journal(settings.journal_path(J.RUN_ID))
    server = make_server(Board(RunSource(settings, None), TOKEN))
    sock = bind(parse_listen("127.0.0.1:0"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", journal
    finally:
        journal.close()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_the_board_renders_hostile_journal_strings_as_text_and_follows_the_run(
    served: tuple[str, Journal], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    base, journal = served
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("dialog", lambda d: problems.append(f"dialog: {d.message}"))
            page.goto(f"{base}/?token={TOKEN}")
            assert page.url == f"{base}/"  # the token left the address bar
            page.wait_for_selector("#graph g.node[data-host='db1']")
            # hostile strings are text: no script ran, no element was injected
            assert page.eval_on_selector_all("script", "s => s.length") == 1
            assert page.eval_on_selector_all("svg [onload], img, iframe", "s => s.length") == 0
            assert page.text_content("#site") == J.HOSTILE
            hosts = page.eval_on_selector_all("#graph g.node", "ns => ns.map(n => n.dataset.host)")
            assert J.HOSTILE_HOST in hosts
            assert J.HOSTILE_BB in (page.text_content("#kept") or "")
            assert J.HOSTILE in (page.text_content("#left") or "")
            states: dict[str, Any] = page.eval_on_selector_all(
                "#graph g.node", "ns => Object.fromEntries(ns.map(n => [n.dataset.host, n.dataset.state]))")
            assert states == {"app1": "stopped", J.HOSTILE_HOST: "failed", "db1": "running", "ed1": "kept-running"}
            assert page.text_content("#ttc") == "3.0 s"
            assert page.text_content("#status") == "running"
            # its last record is long past (a synthetic journal of January): the page says the run went quiet
            page.wait_for_selector("#quiet", state="visible", timeout=3000)
            assert "no journal record for" in (page.text_content("#quiet") or "")
            page.click("#graph g.node[data-host='ed1']")
            assert J.HOSTILE_BB in (page.text_content("#why") or "")
            # the run goes on: db1 turns "stopping", then "off", the run finishes
            journal.emit("wave-started", wave=2, phase="shutdown")
            journal.emit("step-started", step_id="stop-host:db1", action="stop-host", target="db1", wave=2)
            page.wait_for_selector("#graph g.node[data-host='db1'][data-state='stopping']", timeout=3000)
            J.finish(journal)
            page.wait_for_selector("#graph g.node[data-host='db1'][data-state='stopped']", timeout=3000)
            assert page.get_attribute("#graph g.node[data-host='db1'] rect", "fill") == "#64748b"
            page.wait_for_function("() => document.getElementById('status').textContent === 'failed'", timeout=3000)
            page.wait_for_selector("#quiet", state="hidden", timeout=3000)  # finished: nothing to wait for
            page.screenshot(path=str(tmp_path / "board-hostile.png"), full_page=True)
            # a second browser without the token is refused
            stranger = browser.new_context().new_page()
            for path in ("/", "/events", "/state.json", "/static/board.js"):
                response = stranger.goto(base + path)
                assert response is not None and response.status == 403, path
        finally:
            browser.close()
    assert not problems, problems
