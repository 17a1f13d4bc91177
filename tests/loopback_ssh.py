"""A minimal SSH server on loopback (paramiko's server side, in a thread) for driver tests.

Each exec request runs with ``sh -c`` on this machine, so commands, stdin, stdout, stderr and exit
statuses are real. It counts connections and every password offered to it (a test can prove a
password was never sent). Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import IO

import paramiko
from paramiko.common import (
    AUTH_FAILED,
    AUTH_SUCCESSFUL,
    OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED,
    OPEN_SUCCEEDED,
)

USER = "tester"
PASSWORD = "correct horse battery staple"  # a test secret: must never show up in an error


class _Handler(paramiko.ServerInterface):
    def __init__(self, server: LoopbackSshServer) -> None:
        self.server = server

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return OPEN_SUCCEEDED
        return OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def get_allowed_auths(self, username: str) -> str:
        return "publickey,password"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == USER and key == self.server.client_key:
            return AUTH_SUCCESSFUL
        return AUTH_FAILED

    def check_auth_password(self, username: str, password: str) -> int:
        self.server.passwords_offered += 1
        if username == USER and password == PASSWORD:
            return AUTH_SUCCESSFUL
        return AUTH_FAILED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        thread = threading.Thread(target=self.server.execute, args=(channel, command.decode()), daemon=True)
        self.server.exec_threads.append(thread)
        thread.start()
        return True


class LoopbackSshServer:
    """A minimal SSH server on 127.0.0.1:<random port>; counts connections; can drop them all."""

    def __init__(self, host_key: paramiko.PKey, client_key: paramiko.PKey) -> None:
        self.host_key = host_key
        self.client_key = client_key
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(50)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self.passwords_offered = 0
        self.transports: list[paramiko.Transport] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.exec_threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.host_key)
            self.transports.append(transport)
            try:
                transport.start_server(server=_Handler(self))
            except (paramiko.SSHException, EOFError, OSError):
                continue

    def execute(self, channel: paramiko.Channel, command: str) -> None:
        proc = subprocess.Popen(
            ["sh", "-c", command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.procs.append(proc)
        assert proc.stdin and proc.stdout and proc.stderr

        def feed() -> None:
            assert proc.stdin
            try:
                while data := channel.recv(65536):
                    proc.stdin.write(data)
            except (OSError, EOFError):
                pass
            finally:
                with contextlib.suppress(OSError):  # a broken pipe: the command exited first
                    proc.stdin.close()

        def pump(stream: IO[bytes], send: Callable[[bytes], object]) -> None:
            try:
                while chunk := stream.read1(65536):  # type: ignore[attr-defined]  # a BufferedReader's
                    send(chunk)
            except (OSError, EOFError):
                pass

        threads = [
            threading.Thread(target=feed, daemon=True),
            threading.Thread(target=pump, args=(proc.stdout, channel.sendall), daemon=True),
            threading.Thread(target=pump, args=(proc.stderr, channel.sendall_stderr), daemon=True),
        ]
        for t in threads:
            t.start()
        rc = proc.wait()
        threads[1].join()
        threads[2].join()
        for stream in (proc.stdout, proc.stderr):
            stream.close()
        with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
            channel.send_exit_status(rc if rc >= 0 else 128 - rc)  # killed by a signal: 128 + signo
            channel.close()

    def drop_connections(self) -> None:
        for transport in self.transports:
            transport.close()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self.sock.close()
        self._thread.join(timeout=2)
        self.drop_connections()
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for thread in self.exec_threads:
            thread.join(timeout=5)


def known_hosts_line(port: int, key: paramiko.PKey) -> str:
    return f"[127.0.0.1]:{port} {key.get_name()} {key.get_base64()}\n"
