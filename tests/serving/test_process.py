"""Child processes of `cascade up`: crashes are reported with their log, stops leave nothing behind."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from serving.process import ManagedProcess, ProcessFailed, stop_all, wait_ready
from serving.up import Stack
from serving.vllm import VllmOptions, VllmServer
from tests.serving.helpers import free_port


def python_child(tmp_path: Path, name: str, code: str) -> ManagedProcess:
    url = f"http://127.0.0.1:{free_port()}/never"
    return ManagedProcess(name, [sys.executable, "-c", code], dict(os.environ), tmp_path / f"{name}.log", url)


def test_a_child_that_exits_while_starting_is_reported_with_its_log(tmp_path: Path) -> None:
    child = python_child(tmp_path, "crasher", "print('loading weights'); print('boom: out of memory'); exit(3)")
    child.start()
    with pytest.raises(ProcessFailed) as raised:
        wait_ready([child], 30, lambda line: None)
    message = str(raised.value)
    assert message.startswith("crasher exited with status 3")
    assert message.endswith("loading weights\nboom: out of memory")


def test_stop_kills_a_child_that_ignores_sigterm_and_its_children(tmp_path: Path) -> None:
    code = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import signal, time; "
        "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
        "print('up', flush=True)\n"
        "time.sleep(600)\n"
    )
    child = python_child(tmp_path, "stubborn", code)
    child.start()
    assert child.pid is not None
    deadline = time.monotonic() + 30
    while "up" not in child.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    family = [psutil.Process(child.pid), *psutil.Process(child.pid).children(recursive=True)]
    assert len(family) == 2
    started = time.monotonic()
    stop_all([child], timeout_s=1)
    assert time.monotonic() - started < 10
    assert not any(process.is_running() and process.status() != psutil.STATUS_ZOMBIE for process in family)


def test_watch_reports_the_process_that_died(tmp_path: Path) -> None:
    sleeper = "import time; print('serving', flush=True); time.sleep(600)"
    stack = Stack(
        student=python_child(tmp_path, "student", sleeper),
        teacher=python_child(tmp_path, "teacher", "import time; print('teacher log line'); time.sleep(0.5); exit(9)"),
        gateway=python_child(tmp_path, "gateway", sleeper),
    )
    for process in stack.processes:
        process.start()
    try:
        with pytest.raises(ProcessFailed, match=r"teacher exited with status 9[\s\S]*teacher log line"):
            stack.watch(threading.Event())
    finally:
        stop_all(stack.processes, timeout_s=5)
    assert all(process.poll() is not None for process in stack.processes)


def test_vllm_that_cannot_load_its_model_fails_with_its_own_error(tmp_path: Path) -> None:
    (tmp_path / "empty-model").mkdir()
    options = VllmOptions(
        model_dir=tmp_path / "empty-model",
        served_name="nothing",
        port=free_port(),
        log_path=tmp_path / "vllm.log",
        cache_root=tmp_path / "cache",
        enforce_eager=True,
    )
    server = VllmServer("student", options)
    server.start()
    try:
        with pytest.raises(ProcessFailed) as raised:
            wait_ready([server], 300, lambda line: None)
    finally:
        server.stop()
    assert str(raised.value).startswith("student exited with status")
    assert "Error" in str(raised.value)
