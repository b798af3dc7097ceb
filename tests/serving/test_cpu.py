"""`local.dtype: auto` on the machine it runs on: bf16 where the CPU multiplies it natively, else float32
without graph compilation; an explicit setting always wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from cascade.config import LocalSettings
from serving.cpu import cpu_flags, machine_dtype
from serving.up import serving_mode

SAPPHIRE_RAPIDS = frozenset({"fpu", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
OLDER_XEON = frozenset({"fpu", "avx2", "avx512f"})


def test_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: x\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.parametrize(
    ("flags", "profile", "dtype"),
    [(SAPPHIRE_RAPIDS, "cpu", "bfloat16"), (OLDER_XEON, "cpu", "float32"), (OLDER_XEON, "gpu", "bfloat16")],
)
def test_auto_picks_the_dtype_the_machine_runs_fast(flags: frozenset[str], profile: str, dtype: str) -> None:
    assert machine_dtype(profile, flags) == dtype


def test_auto_skips_graph_compilation_for_float32_on_the_cpu_only_and_explicit_settings_win() -> None:
    assert serving_mode(LocalSettings(), OLDER_XEON) == ("float32", True)
    assert serving_mode(LocalSettings(), SAPPHIRE_RAPIDS) == ("bfloat16", False)
    assert serving_mode(LocalSettings(profile="gpu"), OLDER_XEON) == ("bfloat16", False)
    assert serving_mode(LocalSettings(dtype="bfloat16", enforce_eager=True), OLDER_XEON) == ("bfloat16", True)
    assert serving_mode(LocalSettings(dtype="float32", enforce_eager=False), SAPPHIRE_RAPIDS) == ("float32", False)
