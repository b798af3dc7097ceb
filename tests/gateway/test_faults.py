"""Fault injection with real processes on loopback: every accepted request answered and logged.

A student server SIGKILLed under load, and the log's PostgreSQL cut off (through a proxy) under load: the
clients see only successful answers, and once the gateway has shut down cleanly every request id a client
received has exactly one log record.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import (
    ROOT,
    STUDENT_MODEL,
    GatewayFactory,
    Server,
    drop_schema,
    free_port,
    gateway_config,
    stop,
    wait_http,
)
from tests.gateway.helpers import records


class CuttableProxy:
    """A TCP proxy on loopback whose traffic can be cut (connections dropped, new ones refused) and restored."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.open = True
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:  # a connection accepted while a cut runs is refused, never left open past it
                if not self.open:
                    client.close()
                    continue
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()

    def cut(self) -> None:
        with self._lock:
            self.open = False
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._sockets.clear()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self._server.close()
        self.cut()


def load(gateway: Server, seconds: float, during: float, action: object) -> list[tuple[int, str]]:
    """Requests from 8 threads for ``seconds``; ``action()`` runs ``during`` seconds in."""
    results: list[tuple[int, str]] = []
    stop_at = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            while time.monotonic() < stop_at:
                body = {"model": "cascade", "messages": [{"role": "user", "content": "hello"}]}
                response = http.post(gateway.url + "/chat/completions", json=body)
                results.append((response.status_code, response.headers.get("x-request-id", "")))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(during)
    action()  # type: ignore[operator]
    for thread in threads:
        thread.join()
    return results


def logged_ids(url: str) -> list[str]:
    return [record.request_id for record in records(url)]


@pytest.fixture
def own_student() -> Iterator[Server]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fake_upstream",
            "--port",
            str(port),
            "--model",
            STUDENT_MODEL,
            "--role",
            "student",
        ],
        cwd=ROOT,
    )
    server = Server(f"http://127.0.0.1:{port}/v1", proc)
    wait_http(server.url + "/models", proc)
    yield server
    stop(proc)


def test_student_killed_under_load(
    start_gateway: GatewayFactory, own_student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'log.db'}"
    config = gateway_config(own_student.url, fake_teacher.url)
    config["student"].update(retries=0, breaker_failures=3)
    config["log_store"] = {"url": url, "spool_dir": str(tmp_path / "spool")}
    gateway = start_gateway(config)
    results = load(gateway, 4.0, 1.5, lambda: own_student.proc.send_signal(signal.SIGKILL))
    assert results and {status for status, _ in results} == {200}
    stop(gateway.proc)  # a clean shutdown drains the log queue
    logged = logged_ids(url)
    assert sorted(logged) == sorted(request_id for _, request_id in results)


def test_log_database_cut_off_under_load(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    proxy = CuttableProxy(5432)
    schema = f"faults_{uuid.uuid4().hex[:10]}"
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.port}/test?schema={schema}"
    direct = f"postgresql+asyncpg://postgres@127.0.0.1:5432/test?schema={schema}"
    config = gateway_config(fake_student.url, fake_teacher.url)
    config["log_store"] = {"url": url, "spool_dir": str(tmp_path / "spool"), "flush_interval_s": 0.05}
    gateway = start_gateway(config)

    def outage() -> None:
        proxy.cut()
        threading.Timer(2.0, proxy.restore).start()

    try:
        results = load(gateway, 5.0, 1.0, outage)
        assert results and {status for status, _ in results} == {200}
        expected = sorted(request_id for _, request_id in results)
        deadline = time.monotonic() + 60  # the database is back: the spool is replayed (after the backoff)
        while sorted(logged_ids(direct)) != expected and time.monotonic() < deadline:
            time.sleep(0.5)
        stop(gateway.proc)
        assert sorted(logged_ids(direct)) == expected  # each exactly once, none duplicated at shutdown
    finally:
        proxy.close()
        drop_schema(schema)
