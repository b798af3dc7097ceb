"""Session fixtures: real processes on loopback, started once and killed at the end."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STUDENT_MODEL, TEACHER_MODEL = "student-model", "teacher-model"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``alone`` run first, in their order. Session fixtures keep their model servers up to the end
    (the tiny pair, the LoRA student): a module that starts a larger pair of its own beside them took the
    machine to its last GiB of memory (23 of 24 GiB), and CI's teacher was killed. Run first, it has the
    machine to itself; its module fixtures stop its servers before anything else starts."""
    items[:] = [item for item in items if item.get_closest_marker("alone")] + [
        item for item in items if not item.get_closest_marker("alone")
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def drop_schema(schema: str) -> None:
    """Drop a test's own schema in the local PostgreSQL (test database, trust auth), whatever it holds."""
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc", f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'],
        check=False,
        capture_output=True,
        timeout=60,  # a lock held by a connection that outlived its test must not hang the suite
    )


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up in {timeout_s} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Server:
    url: str  # base URL ending in /v1
    proc: subprocess.Popen[bytes]

    @property
    def root(self) -> str:
        return self.url.removesuffix("/v1")


def start_fake(model: str, role: str, api_key: str | None = None) -> Server:
    """A fake upstream (tests/fake_upstream.py) on a free port; stop it with ``stop(server.proc)``."""
    port = free_port()
    argv = [sys.executable, "-m", "tests.fake_upstream", "--port", str(port), "--model", model, "--role", role]
    proc = subprocess.Popen([*argv, *(["--api-key", api_key] if api_key else [])], cwd=ROOT)
    server = Server(f"http://127.0.0.1:{port}/v1", proc)
    wait_http(server.root + "/_stats", proc)
    return server


@pytest.fixture(scope="session")
def fake_student() -> Iterator[Server]:
    server = start_fake(STUDENT_MODEL, "student")
    yield server
    stop(server.proc)


@pytest.fixture(scope="session")
def fake_teacher() -> Iterator[Server]:
    server = start_fake(TEACHER_MODEL, "teacher")
    yield server
    stop(server.proc)


GatewayFactory = Callable[..., Server]


@pytest.fixture(scope="session")
def start_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayFactory]:
    """Start a real `cascade serve` with the given config dict; all are stopped at the end of the session."""
    started: list[Server] = []

    def start(config: dict, *args: str) -> Server:
        port = free_port()
        folder = tmp_path_factory.mktemp("gateway")
        server = {"state_file": str(folder / "state.json"), **config.get("server", {}), "port": port}
        log_store = {"url": f"sqlite+aiosqlite:///{folder / 'log.db'}", "spool_dir": str(folder / "spool")}
        config = {**config, "server": server, "log_store": {**log_store, **config.get("log_store", {})}}
        path = folder / "cascade.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASCADE_")}
        proc = subprocess.Popen(
            [sys.executable, "-m", "cascade.cli", "serve", "--config", str(path), *args], cwd=ROOT, env=env
        )
        server = Server(f"http://127.0.0.1:{port}/v1", proc)
        wait_http(server.root + "/healthz", proc)
        started.append(server)
        return server

    yield start
    for server in started:
        stop(server.proc)


def gateway_config(student_url: str, teacher_url: str, **router: object) -> dict:
    return {
        "student": {"url": student_url, "model": STUDENT_MODEL, "read_timeout_s": 2.0},
        "teacher": {"url": teacher_url, "model": TEACHER_MODEL, "read_timeout_s": 2.0},
        "router": {"signal": "mean_prob", "threshold": 0.5, "top_logprobs": 3, **router},
    }


@pytest.fixture(scope="session")
def gateway(start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server) -> Server:
    """The gateway in front of the two fake upstreams."""
    return start_gateway(gateway_config(fake_student.url, fake_teacher.url))
