"""Starting real vLLM servers and `cascade serve` gateways for the serving tests."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.models import PairPaths
from serving.process import ManagedProcess, stop_all, wait_ready
from serving.vllm import VllmOptions, VllmServer, split_cores

ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = ROOT / "models"
LORA_RANK = 8
START_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Servers:
    student: VllmOptions
    teacher: VllmOptions


def start_pair(
    paths: PairPaths, var_dir: Path, lora_rank: int | None, teacher_aliases: tuple[str, ...] = ()
) -> tuple[VllmServer, VllmServer]:
    """Start a student and a teacher vLLM server (eager, small KV cache) and wait until both are healthy; the
    teacher also answers to ``teacher_aliases``."""
    common: dict[str, Any] = {
        "cache_root": var_dir / "vllm-cache",
        "enforce_eager": True,
        "max_model_len": 1024,
        "kv_cache_gib": 1,
    }
    student_cores, teacher_cores = split_cores(2)
    student = VllmServer(
        "student",
        VllmOptions(
            model_dir=paths.student.path,
            served_name=paths.student.name,
            port=free_port(),
            log_path=var_dir / "student.log",
            max_lora_rank=lora_rank,
            tool_parser=paths.student.tool_parser,
            cpu_cores=student_cores,
            **common,
        ),
    )
    teacher = VllmServer(
        "teacher",
        VllmOptions(
            model_dir=paths.teacher.path,
            served_name=paths.teacher.name,
            port=free_port(),
            log_path=var_dir / "teacher.log",
            tool_parser=paths.teacher.tool_parser,
            cpu_cores=teacher_cores,
            aliases=teacher_aliases,
            **common,
        ),
    )
    student.start()
    teacher.start()
    try:
        wait_ready([student, teacher], START_TIMEOUT_S, say)
    except BaseException:
        stop_all([student, teacher])
        raise
    return student, teacher


GatewayFactory = Callable[..., str]


def assert_running(processes: list[ManagedProcess]) -> None:
    """Raise the child's :class:`ProcessFailed` (exit status, last lines of its log) for any that has exited."""
    for process in processes:
        if (status := process.poll()) is not None:
            raise process.failure(f"exited with status {status}")


def start_gateway(servers: Servers, work_dir: Path, **env: str) -> ManagedProcess:
    """``cascade serve`` against the servers; ``env`` adds CASCADE_* settings (e.g. the router threshold)."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "cascade.cli",
        "serve",
        "--student-url",
        servers.student.base_url,
        "--student-model",
        servers.student.served_name,
        "--teacher-url",
        servers.teacher.base_url,
        "--teacher-model",
        servers.teacher.served_name,
        "--port",
        str(port),
    ]
    environ = {
        **os.environ,
        "CASCADE_LOG_STORE__URL": f"sqlite+aiosqlite:///{work_dir}/cascade.db",
        "CASCADE_LOG_STORE__SPOOL_DIR": str(work_dir / "spool"),
        "CASCADE_SERVER__STATE_FILE": str(work_dir / "state.json"),
        **env,
    }
    gateway = ManagedProcess("gateway", argv, environ, work_dir / "gateway.log", f"http://127.0.0.1:{port}/healthz")
    gateway.start()
    try:
        wait_ready([gateway], 60, say)
    except BaseException:
        gateway.stop()
        raise
    return gateway


def build_adapter(base: Path, out: Path) -> Path:
    """A LoRA adapter with random (not zero) weights, so that it visibly changes the model's output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(
        r=LORA_RANK,
        lora_alpha=4 * LORA_RANK,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        init_lora_weights=False,
    )
    get_peft_model(model, config).save_pretrained(out)
    return out
