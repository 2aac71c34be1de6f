"""A real submission server for tests: ``cvit-bench leaderboard serve`` in a subprocess on a free 127.0.0.1
port, its SQLite file in the board folder, and a small HTTP client (http.client, loopback only).

Every wait is bounded (a deadline), every loop bounded in count.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from cvit_bench.cli import main

HOST = "127.0.0.1"
CLI = [sys.executable, "-m", "cvit_bench"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def add_token(board: Path, name: str, *, maintainer: bool = False, db: list[str] = ()) -> str:
    """Issue a token through the real CLI command (printed once on stdout); ``db``: ``["--db", URL]``."""
    args = ["leaderboard", "token", "add", name, "--board", str(board), *db] + (["--maintainer"] if maintainer else [])
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("cvb_")
    return token


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "----cvb" + secrets.token_hex(8)
    out = bytearray()
    for k, v in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    for k, (filename, data) in files.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{filename}"\r\n'
                f"Content-Type: application/gzip\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Server:
    port: int
    board: Path
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def request(self, method: str, path: str, *, body: bytes | None = None, headers: dict[str, str] | None = None,
                token: str | None = None, timeout: float = 60) -> Reply:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            h = dict(headers or {})
            if token is not None:
                h["Authorization"] = f"Bearer {token}"
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def upload(self, data: bytes, token: str | None, filename: str = "bundle.tar.gz") -> Reply:
        body, ctype = multipart({}, {"bundle": (filename, data)})
        return self.request("POST", "/api/submissions", body=body, headers={"Content-Type": ctype}, token=token)

    def state(self, sid: str, token: str) -> dict[str, Any]:
        r = self.request("GET", f"/api/submissions/{sid}", token=token)
        assert r.status == 200, r.text
        return r.json()

    def wait_state(self, sid: str, token: str, states: tuple[str, ...], timeout: float = 120) -> dict[str, Any]:
        return wait_until(lambda: (s := self.state(sid, token))["state"] in states and s, timeout,
                          interval=0.1, what=f"submission {sid} to reach {states}")


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    return env


@contextlib.contextmanager
def run_server(board: Path, data: Path, *extra: str, log: Path | None = None) -> Iterator[Server]:
    port = free_port()
    log = log or board.parent / f"server-{port}.log"
    board.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as fh:
        proc = subprocess.Popen([*CLI, "leaderboard", "serve", "--board", str(board), "--data", str(data),
                                 "--host", HOST, "--port", str(port), *extra], stdout=fh, stderr=subprocess.STDOUT,
                                env=server_env())
        srv = Server(port, board, proc)
        try:
            def up() -> bool:
                assert proc.poll() is None, f"server exited: {log.read_text()[-3000:]}"
                with contextlib.suppress(OSError):
                    return srv.request("GET", "/healthz", timeout=2).status == 200
                return False
            wait_until(up, 90, interval=0.2, what="the server to start")
            yield srv
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
