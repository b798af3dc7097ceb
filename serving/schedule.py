"""The re-distillation job on a schedule while ``cascade up`` runs (``local.distill_every_h``).

For the local demo only: production schedules the same command with the Kubernetes CronJob or the systemd
timer in ``deploy/``. A run that fails is reported and the next one still comes; the stack keeps serving.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path


class DistillSchedule:
    def __init__(
        self, every_s: float, argv: list[str], env: dict[str, str], log_path: Path, progress: Callable[[str], None]
    ) -> None:
        self.every_s = every_s
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.progress = progress
        self.runs = 0
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._loop, name="distill-schedule", daemon=True)

    def start(self) -> None:
        self.progress(f"re-distillation every {self.every_s / 3600:g} h (log: {self.log_path})")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("ab") as log:
                self._proc = subprocess.Popen(self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)
                code = self._proc.wait()
            self.runs += 1
            if not self._stop.is_set():
                outcome = "finished" if code == 0 else f"FAILED (exit {code}; see {self.log_path})"
                self.progress(f"re-distillation run {self.runs} {outcome}")

    def stop(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._thread.join(timeout=35)
