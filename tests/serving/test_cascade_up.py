"""`cascade up --pair tiny`: the whole stack starts, answers, and stops on SIGTERM leaving no process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import yaml
from openai import OpenAI

from serving.models import PairPaths
from tests.serving.helpers import MODELS_DIR, ROOT, free_port


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_for_gateway(up: subprocess.Popen[bytes], url: str, output: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if up.poll() is not None:
            pytest.fail(f"cascade up exited with {up.returncode}:\n{output.read_text()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"cascade up was not ready in {timeout_s} s:\n{output.read_text()}")


@pytest.mark.timeout(900)
def test_cascade_up_serves_the_tiny_pair_and_stops_cleanly_on_sigterm(tiny_pair: PairPaths, tmp_path: Path) -> None:
    gateway_port = free_port()
    config = tmp_path / "cascade.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "server": {"port": gateway_port},
                "log_store": {
                    "url": f"sqlite+aiosqlite:///{tmp_path}/cascade.db",
                    "spool_dir": str(tmp_path / "spool"),
                },
                "local": {
                    "models_dir": str(MODELS_DIR),
                    "var_dir": str(tmp_path / "var"),
                    "student_port": free_port(),
                    "teacher_port": free_port(),
                    "enforce_eager": True,
                    "max_model_len": 1024,
                },
            }
        )
    )
    output = tmp_path / "up.out"
    with output.open("wb") as sink:
        up = subprocess.Popen(
            [sys.executable, "-m", "cascade.cli", "up", "--pair", "tiny", "--config", str(config)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    descendants: list[psutil.Process] = []
    try:
        wait_for_gateway(up, f"http://127.0.0.1:{gateway_port}/readyz", output, 600)
        client = OpenAI(base_url=f"http://127.0.0.1:{gateway_port}/v1", api_key="unused")
        raw = client.chat.completions.with_raw_response.create(
            model="cascade", messages=[{"role": "user", "content": "What is two plus two?"}], max_tokens=8
        )
        assert raw.headers["x-cascade-tier"] in ("student", "teacher")
        assert raw.parse().usage.completion_tokens > 0  # type: ignore[union-attr]
        figures = httpx.get(f"http://127.0.0.1:{gateway_port}/ui/data", timeout=10).json()  # the built-in page's
        assert figures["windows"]["hour"]["requests"] == 1 and figures["tiers"]["teacher"]["state"] == "ready"
        descendants = psutil.Process(up.pid).children(recursive=True)
        commands = [" ".join(process.cmdline()) for process in descendants]
        assert sum("vllm.entrypoints.openai.api_server" in command for command in commands) == 2
        assert sum("cascade.cli serve" in command for command in commands) == 1

        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=120) == 0
        assert [process.pid for process in descendants if alive(process)] == []
        text = output.read_text()
        assert "ready: http://127.0.0.1" in text and text.rstrip().endswith("cascade: stopped")
        assert f"page http://127.0.0.1:{gateway_port}/ui" in text
    finally:
        if up.poll() is None:
            up.kill()
        for process in descendants:
            if alive(process):
                process.kill()
