"""What this machine's CPU does well, read from ``/proc/cpuinfo``: the dtype ``local.dtype: auto`` serves in.

bf16 is fast only where the CPU multiplies it natively (AVX512_BF16 or AMX); elsewhere vLLM's CPU backend
emulates it and float32 prefills about 5x faster (docs/benchmarks.md). Machines of one kind differ, so this
is detected at start, never assumed.
"""

from __future__ import annotations

from pathlib import Path

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (empty where ``cpuinfo`` cannot be read, e.g. not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16(flags: frozenset[str]) -> bool:
    return bool(NATIVE_BF16_FLAGS & flags)


def machine_dtype(profile: str, flags: frozenset[str]) -> str:
    """The dtype to serve in on this machine: bf16 on a GPU or a CPU with native bf16, else float32."""
    return "bfloat16" if profile == "gpu" or native_bf16(flags) else "float32"
