"""The board's web application (Starlette) and its server (uvicorn): read-only, token-guarded.

Routes, all GET (HEAD): ``/`` the page, ``/events`` the state as server-sent events (a new state within
the poll interval of a journal record), ``/state.json`` the same state once, ``/static/*`` the page's
script and style sheet. There is no route that accepts a body and nothing that writes.

Every request needs the access token: ``?token=...`` (the printed link) or the ``board_token`` cookie
(HttpOnly, SameSite=Strict, Secure under TLS) set when the link is first opened, which then redirects
to ``/`` so the token leaves the address bar. Anything else gets 403. Every response carries a strict
Content-Security-Policy (``default-src 'self'``, no inline script or style, ``frame-ancestors 'none'``),
``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from orchestrator.board.follower import RunSource
from orchestrator.board.state import LIVE_COLOURS, LIVE_LABELS, board_state
from orchestrator.errors import UsageError
from orchestrator.journal import utc_timestamp

HERE = Path(__file__).parent
COOKIE = "board_token"
POLL_S = 0.2  # how often the journal is looked at: a record shows within this (plus the push)
KEEPALIVE_S = 15.0
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
     b"font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"cache-control", b"no-store"),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_matches(given: str | None, token: str) -> bool:
    if not given:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


class Guard:
    """ASGI middleware: the token check and the security headers, on every HTTP response."""

    def __init__(self, app: ASGIApp, token: str, *, secure_cookie: bool) -> None:
        self.app = app
        self.token = token
        self.secure_cookie = secure_cookie

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in
                           {name for name, _ in SECURITY_HEADERS}]
                message["headers"] = headers + SECURITY_HEADERS
            await send(message)

        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        from_query = (query.get("token") or [None])[0]
        cookie = None
        for name, value in scope.get("headers", []):
            if name == b"cookie":
                jar: SimpleCookie = SimpleCookie()
                with contextlib.suppress(Exception):
                    jar.load(value.decode("latin-1"))
                if COOKIE in jar:
                    cookie = jar[COOKIE].value
        if token_matches(from_query, self.token):
            if scope.get("path") == "/" and scope.get("method") in ("GET", "HEAD"):
                flags = "; HttpOnly; SameSite=Strict; Path=/" + ("; Secure" if self.secure_cookie else "")
                response: Response = Response(status_code=303, headers={"location": "/"})
                response.headers.append("set-cookie", f"{COOKIE}={self.token}{flags}")
                await response(scope, receive, send_with_headers)
                return
        elif not token_matches(cookie, self.token):
            refused = Response("403 forbidden: open the board with the link it printed when it started\n",
                               status_code=403, media_type="text/plain; charset=utf-8")
            await refused(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)


class Hub:
    """The newest state, as the JSON text pushed to every open page, and a wake-up for them."""

    def __init__(self) -> None:
        self.version = 0
        self.payload = "{}"
        self.event = asyncio.Event()

    def publish(self, payload: str) -> None:
        self.payload = payload
        self.version += 1
        event, self.event = self.event, asyncio.Event()
        event.set()


@dataclass
class Board:
    """Everything one board serves: where it reads, what it last read."""

    source: RunSource
    token: str
    secure_cookie: bool = False
    poll_s: float = POLL_S

    def state_json(self) -> str:
        state = board_state(self.source.records, run_id=self.source.run_id or "", journal=self.source.journal)
        return json.dumps(state, ensure_ascii=False, separators=(",", ":"), default=str)

    def refresh(self, force: bool = False) -> str | None:
        """Read the journal; the new state's JSON when it changed (or ``force``), else None."""
        changed = self.source.poll()
        return self.state_json() if changed or force else None


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
                              undefined=jinja2.StrictUndefined)


def create_app(board: Board) -> ASGIApp:
    """The ASGI application: Starlette routes behind the :class:`Guard`."""
    hub = Hub()
    env = _environment()

    async def follow() -> None:
        payload = await anyio.to_thread.run_sync(lambda: board.refresh(force=True))
        if payload is not None:
            hub.publish(payload)
        while True:
            await asyncio.sleep(board.poll_s)
            try:
                payload = await anyio.to_thread.run_sync(board.refresh)
            except Exception as exc:  # noqa: BLE001 - a bad read is shown, the board keeps following
                payload = json.dumps({"waiting": True, "error": f"cannot read the journal: {exc}"})
            if payload is not None:
                hub.publish(payload)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(follow())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            board.source.close()

    async def page(_request: Request) -> Response:
        state = json.loads(hub.payload) if hub.version else {}
        html = env.get_template("board.html.j2").render(
            state=state, labels=LIVE_LABELS, colours=LIVE_COLOURS)
        return HTMLResponse(html)

    async def state(_request: Request) -> Response:
        return JSONResponse(json.loads(hub.payload))

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            yield "retry: 1000\n\n"
            seen = -1
            while True:
                event = hub.event
                if hub.version != seen:
                    seen = hub.version
                    yield f"event: clock\ndata: {utc_timestamp()}\n\n"
                    yield f"id: {seen}\nevent: state\ndata: {hub.payload}\n\n"
                try:
                    await asyncio.wait_for(event.wait(), KEEPALIVE_S)
                except TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield f"event: clock\ndata: {utc_timestamp()}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"x-accel-buffering": "no"})

    app = Starlette(
        routes=[
            Route("/", page, methods=["GET"]),
            Route("/events", events, methods=["GET"]),
            Route("/state.json", state, methods=["GET"]),
            Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
        ],
        lifespan=lifespan,
    )
    return Guard(app, board.token, secure_cookie=board.secure_cookie)


# --------------------------------------------------------------------------------------------
# Serving
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_listen(text: str) -> Listen:
    """``127.0.0.1:8080``, ``[::1]:8080``, ``0.0.0.0:8443``; port 0 picks a free one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {text!r} is not ADDRESS:PORT", target="--listen",
                         hint="e.g. --listen 127.0.0.1:8080 (port 0: any free port)")
    host = host.strip("[]") or "127.0.0.1"
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError as exc:
            raise UsageError(f"--listen {text!r}: {host!r} is not an IP address", target="--listen",
                             hint="give the address of the interface to listen on, e.g. 127.0.0.1 or 10.1.2.3"
                             ) from exc
    return Listen(host, int(port))


def check_exposure(listen: Listen, *, tls: bool, allow_plain_http: bool) -> None:
    """Beyond loopback the board needs TLS (a given certificate), unless explicitly allowed."""
    if listen.loopback or tls or allow_plain_http:
        return
    raise UsageError(
        f"refusing to serve the board on {listen.host} without TLS: the access token would cross the "
        "network in clear", target="--listen",
        hint="give --tls-cert FILE --tls-key FILE, or listen on 127.0.0.1 (the default) and reach it through "
             "an SSH tunnel; --allow-plain-http overrides this on a network you trust")


def bind(listen: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    host = "127.0.0.1" if listen.host == "localhost" else listen.host
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, listen.port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {listen.host}:{listen.port}: {exc.strerror or exc}",
                         target="--listen", hint="choose another port (0: any free one)") from exc
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


def board_url(sock: socket.socket, token: str, *, tls: bool) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}/?token={token}"


def make_server(board: Board, *, tls_cert: str | None = None, tls_key: str | None = None) -> Any:
    """A uvicorn server for the board (run it with ``server.run(sockets=[sock])``)."""
    import uvicorn

    if bool(tls_cert) != bool(tls_key):
        raise UsageError("TLS needs both --tls-cert and --tls-key", target="--tls-cert")
    for path in (tls_cert, tls_key):
        if path and not Path(path).is_file():
            raise UsageError(f"no such file: {path}", target=path, hint="give the certificate and key in PEM")
    config = uvicorn.Config(
        create_app(board), access_log=False, log_level="warning", server_header=False, lifespan="on",
        ssl_certfile=tls_cert, ssl_keyfile=tls_key, timeout_graceful_shutdown=1,
    )
    return uvicorn.Server(config)
