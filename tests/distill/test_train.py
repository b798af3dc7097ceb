"""Training: seeded and deterministic; an interrupted run resumes from its checkpoint to the same result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from cascade.config import DistillSettings
from distill import dataset as ds
from distill.train import train
from tests.distill.helpers import make_records


@pytest.fixture(scope="module")
def encoded(tiny_tokenizer: Any) -> list[ds.Encoded]:
    teacher, accepted, _ = ds.examples_from_records(make_records(tiny_tokenizer, 16, 4))
    items, too_long, unrenderable = ds.encode_all(tiny_tokenizer, teacher + accepted, 256)
    assert too_long == unrenderable == 0
    return items


def _settings(tiny_student: Path) -> DistillSettings:
    return DistillSettings(
        base_model=tiny_student, steps=6, batch_size=4, lr=5e-3, lora_rank=4, lora_alpha=8, checkpoint_every=2
    )


def test_an_interrupted_run_resumes_to_the_same_adapter(
    tiny_student: Path, encoded: list[ds.Encoded], tmp_path: Path
) -> None:
    settings = _settings(tiny_student)
    straight = train(settings, encoded, 0, tmp_path / "a" / "ckpt", tmp_path / "a" / "out", progress=False)
    assert straight.completed and straight.resumed_from is None and len(straight.losses) == 6
    assert all(row["kd"] is not None for row in straight.losses)  # the teacher's top-k were used

    first = train(settings, encoded, 0, tmp_path / "b" / "ckpt", tmp_path / "b" / "out", stop_after=3, progress=False)
    assert not first.completed and not (tmp_path / "b" / "out").exists()
    resumed = train(settings, encoded, 0, tmp_path / "b" / "ckpt", tmp_path / "b" / "out", progress=False)
    assert resumed.completed and resumed.resumed_from == 3
    assert [row["loss"] for row in resumed.losses] == [row["loss"] for row in straight.losses]

    a = load_file(tmp_path / "a" / "out" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "out" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all((a[key] == b[key]).all() for key in a)
    assert (tmp_path / "a" / "out" / "adapter_config.json").exists()


def test_a_checkpoint_for_other_settings_is_not_resumed(
    tiny_student: Path, encoded: list[ds.Encoded], tmp_path: Path
) -> None:
    settings = _settings(tiny_student)
    train(settings, encoded, 0, tmp_path / "ckpt", tmp_path / "out", stop_after=2, progress=False)
    other = settings.model_copy(update={"lr": 1e-3})
    result = train(other, encoded, 0, tmp_path / "ckpt", tmp_path / "out", progress=False)
    assert result.completed and result.resumed_from is None and len(result.losses) == 6


def test_full_fine_tuning_saves_a_model_folder(tiny_student: Path, encoded: list[ds.Encoded], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    settings = DistillSettings(base_model=tiny_student, method="full", steps=2, batch_size=4, lr=1e-3)
    result = train(settings, encoded, 0, tmp_path / "ckpt", tmp_path / "out", progress=False)
    assert result.completed and len(result.losses) == 2
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    base = AutoModelForCausalLM.from_pretrained(tiny_student)
    assert any(not (a == b).all() for a, b in zip(tuned.state_dict().values(), base.state_dict().values(), strict=True))


def test_auto_mixed_precision_uses_bf16_only_where_the_cpu_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from distill import train as module
    from distill.train import cpu_has_bf16, resolve_mixed_precision

    with_bf16, without = tmp_path / "with", tmp_path / "without"
    with_bf16.write_text("flags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n")
    without.write_text("flags\t\t: fpu sse2 avx512f avx512_vnni\n")
    assert cpu_has_bf16(with_bf16) and not cpu_has_bf16(without) and not cpu_has_bf16(tmp_path / "absent")
    assert resolve_mixed_precision("no") == "no" and resolve_mixed_precision("bf16") == "bf16"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native, expected in ((True, "bf16"), (False, "no")):
        monkeypatch.setattr(module, "cpu_has_bf16", lambda native=native: native)
        assert resolve_mixed_precision("auto") == expected
