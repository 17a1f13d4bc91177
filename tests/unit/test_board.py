"""The crisis cell's board: token, headers, escaping, read-only journal following, live push."""

from __future__ import annotations

import builtins
import hashlib
import ipaddress
import json
import os
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from click.testing import CliRunner
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from orchestrator.board import follower as follower_module
from orchestrator.board.app import POLL_S, Board, bind, check_exposure, create_app, make_server, parse_listen
from orchestrator.board.follower import JournalFollower, RunSource
from orchestrator.board.state import board_state, live_outcomes
from orchestrator.board.token import load_token
from orchestrator.cli import cli
from orchestrator.config import Settings
from orchestrator.errors import UsageError
from orchestrator.journal import Journal, read_journal
from orchestrator.report import build_report

RUN_ID = "20260113T053200Z-b0a4d0"
START = datetime(2026, 1, 13, 5, 32, 0, tzinfo=UTC)
HOSTILE = "<script>alert(1)</script>"
HOSTILE_HOST = "evil\"><svg onload=alert(2)>"
HOSTILE_BB = "[/b][red]ok[/red] 'single' \"double\""


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def _step(step_id: str, requires: tuple[str, ...] = (), tier: int | None = None) -> dict[str, Any]:
    action, target = step_id.split(":", 1)
    out: dict[str, Any] = {"id": step_id, "action": action, "target": target, "requires": list(requires),
                           "verify": "..."}
    if tier is not None:
        out["tier"] = tier
    return out


def plan() -> dict[str, Any]:
    waves = [
        ("contain", [_step("isolate-segment:servers")]),
        ("shutdown", [_step("stop-host:app1", tier=1), _step(f"stop-host:{HOSTILE_HOST}", tier=1)]),
        ("shutdown", [_step("stop-host:db1", ("stop-host:app1",), tier=0)]),
        ("verify", [_step("verify:final")]),
    ]
    return {"schema": "orchestrator.plan/v1", "mode": "shutdown", "site": HOSTILE, "plan_id": "p" * 64,
            "scope": {"campuses": [], "segments": [], "hosts": []},
            "kept": {"ed1": f"island ed: {HOSTILE_BB}"},
            "waves": [{"index": i, "phase": p, "steps": s} for i, (p, s) in enumerate(waves)]}


def topology() -> dict[str, Any]:
    hosts = {
        "app1": {"segment": "servers", "tier": 1, "depends_on": ["db1"]},
        HOSTILE_HOST: {"segment": "servers", "tier": 1, "depends_on": []},
        "db1": {"segment": "servers", "tier": 0, "depends_on": []},
        "ed1": {"segment": "ed", "tier": 0, "depends_on": []},
    }
    return {"hosts": hosts, "segments": {}, "links": {}, "kept": {"ed1": f"island ed: {HOSTILE_BB}"},
            "management": "mgmt"}


def start_journal(path: Path) -> Journal:
    """A shutdown under way: contained, app1 off, the hostile host failed; db1 not started yet."""
    p = plan()
    j = Journal.create(path, RUN_ID, clock=Clock())
    j.emit("run-started", operator=f"{HOSTILE}@host", host="ctl", pid=1, argv=["orchestrator"], mode="shutdown",
           plan_id=p["plan_id"], inventory="inv.yml", inventory_sha256="ab" * 32, plan=p, scope=p["scope"],
           site=HOSTILE, timezone="Europe/Brussels", topology=topology())
    j.emit("wave-started", wave=0, phase="contain")
    j.emit("step-started", step_id="isolate-segment:servers", action="isolate-segment", target="servers", wave=0)
    j.emit("step-finished", step_id="isolate-segment:servers", action="isolate-segment", target="servers",
           status="verified", changed=True, already=False, escalated=False, error=None, evidence={}, duration_s=1.0)
    j.emit("milestone", name="contained", elapsed_s=3.0)
    j.emit("wave-started", wave=1, phase="shutdown")
    for target, status, error in (("app1", "verified", None), (HOSTILE_HOST, "failed", f"{HOSTILE} {HOSTILE_BB}")):
        j.emit("step-started", step_id=f"stop-host:{target}", action="stop-host", target=target, wave=1)
        j.emit("step-finished", step_id=f"stop-host:{target}", action="stop-host", target=target, status=status,
               changed=True, already=False, escalated=False, error=error, evidence={}, duration_s=1.0)
    return j


def finish(j: Journal) -> None:
    j.emit("wave-started", wave=2, phase="shutdown")
    j.emit("step-started", step_id="stop-host:db1", action="stop-host", target="db1", wave=2)
    j.emit("step-finished", step_id="stop-host:db1", action="stop-host", target="db1", status="verified",
           changed=True, already=False, escalated=False, error=None, evidence={}, duration_s=1.0)
    j.emit("run-finished", status="failed", counts={"verified": 3, "failed": 1},
           left=[{"step_id": f"stop-host:{HOSTILE_HOST}", "reason": HOSTILE}])


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def journal(state_dir: Path) -> Iterator[Journal]:
    settings = Settings.resolve(str(state_dir))
    settings.run_dir(RUN_ID).mkdir(parents=True)
    j = start_journal(settings.journal_path(RUN_ID))
    yield j
    j.close()


def make_board(state_dir: Path, token: str = "t" * 43, run_id: str | None = RUN_ID, poll_s: float = 0.05) -> Board:
    return Board(RunSource(Settings.resolve(str(state_dir)), run_id), token, poll_s=poll_s)


def wait_for_state(client: TestClient, **cookies: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        doc: dict[str, Any] = client.get("/state.json", params={"token": "t" * 43}).json()
        if doc.get("records"):
            return doc
        time.sleep(0.05)
    raise AssertionError("the board never read the journal")


# -- the token --------------------------------------------------------------------------------


def test_requests_without_the_token_are_refused(state_dir: Path, journal: Journal) -> None:
    with TestClient(create_app(make_board(state_dir))) as client:
        for path in ("/", "/events", "/state.json", "/static/board.js", "/static/board.css", "/nope"):
            assert client.get(path).status_code == 403, path
            assert client.get(path, params={"token": "t" * 42}).status_code == 403, path
            assert client.get(path, params={"token": "x" * 43}).status_code == 403, path
            assert client.get(path, headers={"Cookie": "board_token=" + "t" * 42}).status_code == 403, path
        refused = client.get("/")
        assert "token" not in refused.text.lower() or "t" * 43 not in refused.text
        assert refused.headers["content-security-policy"].startswith("default-src 'self'")


def test_the_printed_link_sets_a_strict_cookie_and_drops_the_token_from_the_address(
    state_dir: Path, journal: Journal
) -> None:
    with TestClient(create_app(make_board(state_dir))) as client:
        wait_for_state(client)
        first = client.get("/", params={"token": "t" * 43}, follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/"
        cookie = first.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # plain HTTP on loopback; under TLS it is Secure (below)
        page = client.get("/")  # the cookie from now on
        assert page.status_code == 200 and "<svg id=\"graph\"" in page.text
        headers = page.headers
        csp = headers["content-security-policy"]
        for part in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"):
            assert part in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"
        assert client.get("/static/board.js").status_code == 200
    board = make_board(state_dir)
    board.secure_cookie = True
    with TestClient(create_app(board)) as client:
        cookie = client.get("/", params={"token": "t" * 43}, follow_redirects=False).headers["set-cookie"]
        assert "; Secure" in cookie


# -- read-only ----------------------------------------------------------------------------------


def test_there_is_no_route_that_writes(state_dir: Path, journal: Journal) -> None:
    inner: Any = create_app(make_board(state_dir)).app  # type: ignore[attr-defined]
    for route in inner.routes:
        if isinstance(route, Route):
            assert route.methods is not None and route.methods <= {"GET", "HEAD"}, route.path
        else:
            assert isinstance(route, Mount) and route.path == "/static"
    with TestClient(create_app(make_board(state_dir))) as client:
        wait_for_state(client)
        client.get("/", params={"token": "t" * 43})
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            for path in ("/", "/events", "/state.json", "/static/board.js"):
                response = client.request(method, path, content=b"x")
                assert response.status_code == 405, (method, path, response.status_code)


def test_the_journal_is_only_ever_opened_read_only_and_left_as_it_was(
    state_dir: Path, journal: Journal, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = Settings.resolve(str(state_dir)).journal_path(RUN_ID)
    before = (hashlib.sha256(path.read_bytes()).hexdigest(), os.stat(path).st_mtime_ns, os.stat(path).st_mode)
    modes: list[str] = []
    real_open = builtins.open

    def spy(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        modes.append(mode)
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(follower_module, "open", spy, raising=False)
    source = RunSource(Settings.resolve(str(state_dir)), None)
    assert source.poll() and len(source.records) == len(read_journal(path))
    finish(journal)
    assert source.poll()
    source.close()
    assert modes == ["rb"]
    journal.close()
    assert os.stat(path).st_mode == before[2]
    assert read_journal(path)[-1]["type"] == "run-finished"  # the writer was never disturbed


# -- escaping -------------------------------------------------------------------------------------


def test_hostile_strings_from_the_journal_are_escaped_in_the_page_and_sent_as_data(
    state_dir: Path, journal: Journal
) -> None:
    finish(journal)
    with TestClient(create_app(make_board(state_dir))) as client:
        state = wait_for_state(client)
        html = client.get("/", params={"token": "t" * 43}).text
    assert HOSTILE not in html and "<svg onload" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # site, operator: escaped text
    assert len(re.findall(r"<script\b", html)) == 1  # the page's own script only
    # the state carries the strings as they were (JSON data), for textContent on the page
    assert state["site"] == HOSTILE
    assert any(b["name"] == HOSTILE_HOST for b in state["graph"]["boxes"])
    assert any(HOSTILE_BB in k["why"] for k in state["kept"])


def test_the_script_never_turns_data_into_markup() -> None:
    js = (Path(follower_module.__file__).parent / "static" / "board.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "setTimeout(\"", "DOMParser", "createContextualFragment"):
        assert sink not in js, sink
    assert "textContent" in js
    template = (Path(follower_module.__file__).parent / "templates" / "board.html.j2").read_text(encoding="utf-8")
    assert "|safe" not in template and "autoescape false" not in template
    assert re.findall(r"<script[^>]*>", template) == ['<script src="/static/board.js" defer>']
    assert " style=" not in template  # no inline styles: the CSP forbids them


# -- live push ----------------------------------------------------------------------------------


def test_a_new_journal_record_reaches_an_open_page_within_a_second(state_dir: Path, journal: Journal) -> None:
    token = "k" * 43
    board = make_board(state_dir, token, poll_s=POLL_S)  # as served
    server = make_server(board)
    sock = bind(parse_listen("127.0.0.1:0"))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        states: list[tuple[float, dict[str, Any]]] = []
        with httpx.Client(timeout=10) as http, http.stream(
            "GET", f"http://127.0.0.1:{port}/events", params={"token": token}
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            appended = 0.0
            event = ""
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    event = line[len("event: "):]
                elif line.startswith("data: ") and event == "state":
                    doc = json.loads(line[len("data: "):])
                    states.append((time.monotonic(), doc))
                    if len(states) == 1:
                        assert doc["status"] == "running" and doc["records"] == 10
                        time.sleep(0.3)
                        appended = time.monotonic()
                        journal.emit("milestone", name="shutdown-complete", elapsed_s=9.0)
                    elif doc["records"] == 11:
                        break
        arrived, doc = states[-1]
        assert doc["times"]["shutdown"] == "9.0 s"
        assert arrived - appended < 1.0, f"took {arrived - appended:.2f} s"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# -- state ----------------------------------------------------------------------------------------


def test_hosts_are_coloured_by_what_happens_now(state_dir: Path, journal: Journal) -> None:
    journal.emit("wave-started", wave=2, phase="shutdown")
    journal.emit("step-started", step_id="stop-host:db1", action="stop-host", target="db1", wave=2)
    records = read_journal(Settings.resolve(str(state_dir)).journal_path(RUN_ID))
    live = live_outcomes(build_report(records))
    assert live["app1"][0] == "stopped"
    assert live["db1"] == ("stopping", "stop-host:db1 under way")
    assert live[HOSTILE_HOST][0] == "failed"
    assert live["ed1"][0] == "kept-running"
    before = live_outcomes(build_report(records[:-2]))
    assert before["db1"][0] == "running" and "not started yet" in before["db1"][1]
    state = board_state(records)
    boxes = {b["name"]: b for b in state["graph"]["boxes"]}
    assert boxes["db1"]["label"] == "stopping" and boxes["app1"]["label"] == "off"
    assert boxes["ed1"]["label"] == "kept running"
    assert state["status"] == "running" and state["times"]["containment"] == "3.0 s"
    assert [x["step_id"] for x in state["left"]] == [f"stop-host:{HOSTILE_HOST}"]  # only what went wrong so far
    assert {n["key"] for n in state["nis2"]} == {"early-warning", "incident-notification"}
    early = next(n for n in state["nis2"] if n["key"] == "early-warning")
    assert early["due"]["iso"].startswith("2026-01-14T05:32:01")  # 24 h after the run start (detection)


def test_the_restore_board_shows_each_tier_and_who_approved_its_gate(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("_report_journals", Path(__file__).with_name("test_report.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = module.write_restore_run(tmp_path / "journal.jsonl")
    state = board_state(read_journal(path))
    tiers = {row["tier"]: row for row in state["restore"]}
    assert set(tiers) == {0, 1}
    assert tiers[0]["summary"]["integrity"] == "verified" and tiers[1]["summary"]["integrity"] == "1 failed"
    assert tiers[0]["gate"]["approved"] is True and tiers[0]["gate"]["approver"] == "oncall@laptop"
    assert state["nis2"] == []  # a restore's start is not the incident's detection


def test_following_reads_only_complete_lines_and_starts_over_on_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    follower = JournalFollower(path)
    assert not follower.poll()  # not there yet: waiting
    path.write_bytes(b'{"seq":0,"type":"a"}\n{"seq":1,')
    assert follower.poll() and [r["seq"] for r in follower.records] == [0]
    with path.open("ab") as f:
        f.write(b'"type":"b"}\n')
    assert follower.poll() and [r["seq"] for r in follower.records] == [0, 1]
    assert not follower.poll()
    path.write_bytes(b'{"seq":0,"type":"c"}\n')  # shorter: moved aside and written again
    assert follower.poll() and [r["type"] for r in follower.records] == ["c"]
    follower.close()


def test_next_waits_for_a_run_newer_than_the_board(state_dir: Path, journal: Journal) -> None:
    settings = Settings.resolve(str(state_dir))
    source = RunSource(settings, None, after=RUN_ID)
    assert not source.poll() and source.records == [] and source.run_id is None
    later = "20260113T060000Z-000001"
    settings.run_dir(later).mkdir()
    other = Journal.create(settings.journal_path(later), later, clock=Clock())
    other.emit("run-started", mode="shutdown", plan={}, site="s")
    other.close()
    assert source.poll() and source.run_id == later and len(source.records) == 1
    source.close()
    assert board_state([])["waiting"] is True


# -- serving safely ------------------------------------------------------------------------------


def test_listening_beyond_loopback_needs_tls_or_an_explicit_flag() -> None:
    for text in ("127.0.0.1:8080", "[::1]:0", "localhost:9000"):
        check_exposure(parse_listen(text), tls=False, allow_plain_http=False)
    wide = parse_listen("0.0.0.0:8443")
    with pytest.raises(UsageError, match="without TLS"):
        check_exposure(wide, tls=False, allow_plain_http=False)
    check_exposure(wide, tls=True, allow_plain_http=False)
    check_exposure(wide, tls=False, allow_plain_http=True)
    for bad in ("8080", "host.example:80", "127.0.0.1:http", "127.0.0.1:70000"):
        with pytest.raises(UsageError):
            parse_listen(bad)


def test_the_cli_refuses_an_exposed_board_and_an_unknown_run(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["--state-dir", str(tmp_path), "board", "--listen", "0.0.0.0:0"])
    assert isinstance(res.exception, UsageError) and "without TLS" in str(res.exception)
    res = runner.invoke(cli, ["--state-dir", str(tmp_path), "board", "20990101T000000Z-000000"])
    assert isinstance(res.exception, UsageError) and "no run" in str(res.exception)


def test_a_token_file_is_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "board.token"
    token = load_token(path)
    assert len(token) >= 32 and os.stat(path).st_mode & 0o777 == 0o600
    assert load_token(path) == token
    assert load_token(None) != load_token(None)
    os.chmod(path, 0o640)
    with pytest.raises(UsageError, match="readable by others"):
        load_token(path)


def test_the_drill_starts_the_board_as_a_child_process_and_ends_it(state_dir: Path, journal: Journal) -> None:
    from orchestrator.board.process import start_board_process

    watch = start_board_process(state_dir, run_id=RUN_ID)
    try:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=[A-Za-z0-9_-]{43}", watch.url), watch.url
        base = watch.url.split("/?", 1)[0]
        with httpx.Client(timeout=10) as http:
            assert http.get(base + "/state.json").status_code == 403
            deadline = time.monotonic() + 10
            while http.get(watch.url.replace("/?", "/state.json?")).json().get("records") != 10:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        watch.stop()
    assert watch.process.returncode is not None


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "board.test")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "board.crt", tmp_path / "board.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_the_board_serves_tls_with_the_given_certificate(state_dir: Path, journal: Journal, tmp_path: Path) -> None:
    import ssl

    cert, key = _self_signed(tmp_path)
    token = "s" * 43
    board = make_board(state_dir, token)
    board.secure_cookie = True
    server = make_server(board, tls_cert=str(cert), tls_key=str(key))
    sock = bind(parse_listen("127.0.0.1:0"))
    port = sock.getsockname()[1]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        context = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(verify=context, timeout=10) as http:
            deadline = time.monotonic() + 10
            while True:
                try:
                    first = http.get(f"https://127.0.0.1:{port}/", params={"token": token})
                    break
                except httpx.ConnectError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            assert first.status_code == 303 and "; Secure" in first.headers["set-cookie"]
            assert http.get(f"https://127.0.0.1:{port}/state.json").json()["run_id"] == RUN_ID  # by the cookie
        with httpx.Client(verify=context, timeout=10) as stranger:
            assert stranger.get(f"https://127.0.0.1:{port}/state.json").status_code == 403
        with httpx.Client(timeout=5) as plain, pytest.raises(httpx.HTTPError):
            plain.get(f"http://127.0.0.1:{port}/", params={"token": token})
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    with pytest.raises(UsageError, match="both"):
        make_server(board, tls_cert=str(cert))
