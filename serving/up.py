"""`cascade up`: the whole stack on one machine, a local vLLM student and teacher plus the gateway.

Steps: read the config (the ``local`` section says which pair, ports and server sizes), build or verify the
pair's model folders, start both vLLM servers at once and wait until both are healthy, then start the
gateway (``cascade serve`` in a child process) pointed at them. Then watch: SIGINT (Ctrl-C) or SIGTERM
stops all three, the gateway first; if any of them exits on its own, the others are stopped and the tail
of its log is printed. Logs are written to ``<var_dir>/logs/{student,teacher,gateway}.log``.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from cascade.config import LocalSettings, Settings, load_settings
from serving.cpu import cpu_flags, machine_dtype, native_bf16
from serving.models import PairPaths, echo, pair_specs, prepare_pair
from serving.process import ManagedProcess, ProcessFailed, stop_all, wait_ready
from serving.schedule import DistillSchedule
from serving.vllm import VllmOptions, VllmServer, split_cores

_PROVISIONAL = {"url": "http://127.0.0.1:1/v1"}


def local_settings(config: Path | None, **local_overrides: Any) -> LocalSettings:
    """The validated ``local`` section (config file, CASCADE_LOCAL__* env, then ``local_overrides``)."""
    provisional = load_settings(
        config,
        student={**_PROVISIONAL, "model": "provisional-student"},
        teacher={**_PROVISIONAL, "model": "provisional-teacher"},
        local=local_overrides,
    )
    return provisional.local


def up_settings(config: Path | None, **local_overrides: Any) -> Settings:
    """The whole configuration of `cascade up`: the student and teacher are the local servers."""
    local = local_settings(config, **local_overrides)
    student, teacher = pair_specs(local.pair)
    return load_settings(
        config,
        student={"url": f"http://127.0.0.1:{local.student_port}/v1", "model": student.name},
        teacher={"url": f"http://127.0.0.1:{local.teacher_port}/v1", "model": teacher.name},
        local=local_overrides,
    )


def serving_mode(local: LocalSettings, flags: frozenset[str]) -> tuple[str, bool]:
    """The dtype and whether to skip graph compilation, with ``auto`` / null resolved for this machine."""
    dtype = machine_dtype(local.profile, flags) if local.dtype == "auto" else local.dtype
    eager = local.enforce_eager
    if eager is None:
        eager = local.profile == "cpu" and dtype == "float32"
    return dtype, eager


def server_options(
    local: LocalSettings, paths: PairPaths, flags: frozenset[str] | None = None
) -> tuple[VllmOptions, VllmOptions]:
    var_dir = local.var_dir.resolve()
    dtype, eager = serving_mode(local, cpu_flags() if flags is None else flags)
    common: dict[str, Any] = {
        "cache_root": var_dir / "vllm-cache",
        "profile": local.profile,
        "dtype": dtype,
        "max_model_len": local.max_model_len,
        "kv_cache_gib": local.kv_cache_gib,
        "gpu_memory_utilization": local.gpu_memory_utilization,
        "enforce_eager": eager,
    }
    student_cores, teacher_cores = split_cores(2) if local.profile == "cpu" else (None, None)
    student = VllmOptions(
        model_dir=paths.student.path.resolve(),
        served_name=paths.student.name,
        port=local.student_port,
        log_path=var_dir / "logs" / "student.log",
        max_lora_rank=local.max_lora_rank,
        tool_parser=paths.student.tool_parser,
        cpu_cores=student_cores,
        **common,
    )
    teacher = VllmOptions(
        model_dir=paths.teacher.path.resolve(),
        served_name=paths.teacher.name,
        port=local.teacher_port,
        log_path=var_dir / "logs" / "teacher.log",
        tool_parser=paths.teacher.tool_parser,
        cpu_cores=teacher_cores,
        **common,
    )
    return student, teacher


def gateway_process(settings: Settings, config: Path | None) -> ManagedProcess:
    argv = [sys.executable, "-m", "cascade.cli", "serve"]
    if config is not None:
        argv += ["--config", str(config)]
    argv += [
        "--student-url",
        settings.student.url,
        "--student-model",
        settings.student.model,
        "--teacher-url",
        settings.teacher.url,
        "--teacher-model",
        settings.teacher.model,
        "--host",
        settings.server.host,
        "--port",
        str(settings.server.port),
    ]
    host = "127.0.0.1" if settings.server.host in ("0.0.0.0", "::") else settings.server.host
    return ManagedProcess(
        "gateway",
        argv,
        dict(os.environ),
        settings.local.var_dir.resolve() / "logs" / "gateway.log",
        f"http://{host}:{settings.server.port}/healthz",
    )


@dataclass
class Stack:
    student: VllmServer
    teacher: VllmServer
    gateway: ManagedProcess

    @property
    def processes(self) -> list[ManagedProcess]:
        return [self.gateway, self.student, self.teacher]

    def start(self, timeout_s: float, progress: Callable[[str], None], stop: threading.Event) -> None:
        for server in (self.student, self.teacher):
            progress(f"{server.name}: starting vLLM for {server.options.served_name} on :{server.options.port}")
            server.start()
        wait_ready([self.student, self.teacher], timeout_s, progress, stop)
        self.gateway.start()
        wait_ready([self.gateway], 60, progress, stop)

    def watch(self, stop: threading.Event) -> None:
        """Return when ``stop`` is set; raise :class:`ProcessFailed` when a process exits on its own."""
        while not stop.wait(0.5):
            for process in self.processes:
                status = process.poll()
                if status is not None:
                    raise process.failure(f"exited with status {status}")

    def stop(self) -> None:
        self.gateway.stop(timeout_s=10)
        stop_all([self.student, self.teacher], timeout_s=30)


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def distill_schedule(settings: Settings, config: Path | None, progress: Callable[[str], None]) -> DistillSchedule:
    """`cascade distill run` against this stack's servers (their URLs and names passed as CASCADE_* overrides)."""
    argv = [sys.executable, "-m", "cascade.cli", "distill", "run", "--quiet"]
    if config is not None:
        argv += ["--config", str(config)]
    env = {
        **os.environ,
        "CASCADE_STUDENT__URL": settings.student.url,
        "CASCADE_STUDENT__MODEL": settings.student.model,
        "CASCADE_TEACHER__URL": settings.teacher.url,
        "CASCADE_TEACHER__MODEL": settings.teacher.model,
    }
    assert settings.local.distill_every_h is not None
    log_path = settings.local.var_dir.resolve() / "logs" / "distill.log"
    return DistillSchedule(settings.local.distill_every_h * 3600, argv, env, log_path, progress)


def run_up(config: Path | None, progress: Callable[[str], None] = echo, **local_overrides: Any) -> int:
    """Run the stack until SIGINT/SIGTERM (exit status 0) or until a process fails (1)."""
    settings = up_settings(config, **local_overrides)
    local = settings.local
    paths = prepare_pair(local.pair, local.models_dir.resolve(), progress)
    flags = cpu_flags()
    student_options, teacher_options = server_options(local, paths, flags)
    how = f"{student_options.dtype}{', no graph compilation' if student_options.enforce_eager else ''}"
    if local.profile == "cpu" and local.dtype == "auto":
        how += " (this CPU has native bf16)" if native_bf16(flags) else " (this CPU has no AVX512_BF16 or AMX)"
    progress(f"serving in {how}")
    stack = Stack(
        VllmServer("student", student_options),
        VllmServer("teacher", teacher_options),
        gateway_process(settings, config),
    )
    stop = threading.Event()
    schedule = distill_schedule(settings, config, progress) if local.distill_every_h else None
    with stop_on_signals(stop):
        try:
            stack.start(local.start_timeout_s, progress, stop)
            progress(
                f"ready: http://{settings.server.host}:{settings.server.port}/v1, model {settings.alias!r} "
                f"(student {paths.student.name}, teacher {paths.teacher.name}); {settings.page_note()}; Ctrl-C stops"
            )
            if schedule is not None:
                schedule.start()
            stack.watch(stop)
            return 0
        except InterruptedError:
            return 0
        except ProcessFailed as exc:
            progress(str(exc))
            return 1
        finally:
            if schedule is not None:
                schedule.stop()
            progress("stopping the gateway and both vLLM servers")
            stack.stop()
            progress("stopped")
