"""A long-running child process with its own log file, started and stopped as a whole process group.

Each child leads a new session (so its own children, e.g. vLLM's engine process, share its process group)
and gets SIGTERM if the process that started it dies. :meth:`ManagedProcess.stop` sends SIGTERM to the
group, waits up to a deadline for every member to exit, then sends SIGKILL to what is left.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

PR_SET_PDEATHSIG = 1


class ProcessFailed(Exception):
    """A child exited, or never became ready; the message ends with the tail of its log."""


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):  # not Linux: stop() still cleans up on normal exits
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ManagedProcess:
    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log_path: Path, ready_url: str) -> None:
        self.name = name
        self.ready_url = ready_url
        self.argv = list(argv)
        self.env = env
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def poll(self) -> int | None:
        """The exit status once the child has exited, else None."""
        return self._proc.poll() if self._proc is not None else None

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log written)"
        return "\n".join(text.splitlines()[-lines:])

    def failure(self, what: str) -> ProcessFailed:
        return ProcessFailed(f"{self.name} {what}; last lines of {self.log_path}:\n{self.tail()}")

    def check_ready(self) -> bool:
        """True once ``ready_url`` answers 200; raise :class:`ProcessFailed` if the child has exited."""
        status = self.poll()
        if status is not None:
            raise self.failure(f"exited with status {status}")
        try:
            return httpx.get(self.ready_url, timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def signal_group(self, signum: int) -> bool:
        """Send ``signum`` to the child's process group; False when the group is gone."""
        if self._proc is None:
            return False
        try:
            os.killpg(self._proc.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def group_alive(self) -> bool:
        if self._proc is None:
            return False
        self._proc.poll()  # reap the leader so a zombie does not count
        return self.signal_group(0)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM the whole group, wait up to ``timeout_s``, then SIGKILL whatever is left."""
        if self._proc is None:
            return
        self.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while self.group_alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if self.group_alive():
            self.signal_group(signal.SIGKILL)
            while self.group_alive() and time.monotonic() < deadline + 5:
                time.sleep(0.1)
        self._proc.wait(timeout=5)


def stop_all(processes: Sequence[ManagedProcess], timeout_s: float = 20.0) -> None:
    """Stop several children at once: SIGTERM to all first, so their shutdowns overlap."""
    for process in processes:
        process.signal_group(signal.SIGTERM)
    for process in processes:
        process.stop(timeout_s)


def wait_ready(
    processes: Sequence[ManagedProcess],
    timeout_s: float,
    progress: Callable[[str], None],
    stop: threading.Event | None = None,
    every_s: float = 10.0,
) -> dict[str, float]:
    """Wait until every process answers on its ``ready_url``; return the seconds each took.

    Prints a line when each is ready and a progress line every ``every_s`` seconds. Raises
    :class:`ProcessFailed` when one exits or is not ready in ``timeout_s``, and InterruptedError on ``stop``.
    """
    started = time.monotonic()
    last_line = started
    pending = list(processes)
    took: dict[str, float] = {}
    while pending:
        for process in list(pending):
            if process.check_ready():
                took[process.name] = time.monotonic() - started
                progress(f"{process.name}: ready in {took[process.name]:.0f} s")
                pending.remove(process)
        if not pending:
            break
        now = time.monotonic()
        if now - started > timeout_s:
            raise pending[0].failure(f"was not ready after {timeout_s:.0f} s")
        if now - last_line >= every_s:
            names = ", ".join(process.name for process in pending)
            progress(f"waiting for {names} ({now - started:.0f} s; logs in {pending[0].log_path.parent})")
            last_line = now
        if stop is not None and stop.is_set():
            raise InterruptedError("stopped while starting")
        (stop or threading.Event()).wait(0.5)
    return took
