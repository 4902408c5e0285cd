"""One explorer server per test module: ``python -m convscope serve --port 0`` on
127.0.0.1 (a free port), the shipped Model A and the real MNIST test split; stopped
(and its stderr checked for tracebacks) at the end."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    host: str
    port: int
    process: subprocess.Popen
    stderr: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def request(self, method: str, path: str, body: bytes | dict | None = None, headers: dict[str, str] | None = None,
                timeout: float = 60) -> tuple[int, Any, bytes]:
        """``(status, parsed JSON or None, raw body)``."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        headers = dict(headers or {})
        if isinstance(body, dict):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        try:
            connection.request(method, path, body, headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        return response.status, parsed, raw


def start_server(*args: str, mnist_dir: Path) -> Server:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "CONVSCOPE_DATA": str(mnist_dir)}
    process = subprocess.Popen([sys.executable, "-m", "convscope", "serve", "--port", "0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    line = process.stdout.readline()
    match = re.search(r"http://(127\.0\.0\.1):(\d+)/", line)
    if not match:
        process.kill()
        pytest.fail(f"the explorer did not start: {line!r} {process.stderr.read()[-2000:]}")
    server = Server(match[1], int(match[2]), process)
    threading.Thread(target=lambda: server.stderr.extend(process.stderr), daemon=True).start()
    return server


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(5)


@pytest.fixture(scope="module")
def server(mnist_dir):
    """The explorer for this module (quick OIPs: a few seconds each)."""
    running = start_server("--oip-profile", "quick", "--workers", "2", mnist_dir=mnist_dir)
    try:
        yield running
    finally:
        stop_server(running)
    assert not any("Traceback" in line for line in running.stderr), "".join(running.stderr)[-3000:]


def forward_png(server: Server, body: bytes) -> tuple[int, Any, bytes]:
    """``POST /api/forward`` of a PNG, every layer, base64 floats: ``(status, parsed, raw)``."""
    return server.request("POST", "/api/forward?layers=all&encoding=base64", body, {"Content-Type": "image/png"})


def assert_concurrent_equal_sequential(server: Server, bodies: list[bytes]) -> None:
    """8 clients, 4 requests each, get exactly the bytes one client gets for the same
    drawings one after another (and the drawings' answers differ, so equality means
    something)."""
    sequential = [forward_png(server, body)[2] for body in bodies]
    answers: list[tuple[int, bytes]] = []
    failures: list[str] = []

    def client(index: int) -> None:
        for round_ in range(4):
            which = (index + round_) % len(bodies)
            status, _, raw = forward_png(server, bodies[which])
            if status != 200:
                failures.append(raw[:200].decode(errors="replace"))
            else:
                answers.append((which, raw))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert failures == [] and len(answers) == 32
    assert all(raw == sequential[which] for which, raw in answers)  # the same bytes, whatever ran beside
    assert len(set(sequential)) == len(bodies)
