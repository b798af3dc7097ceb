"""Training the candidate student: transformers + peft through Hugging Face Accelerate.

The same loop runs on one CPU, one GPU or many processes (``accelerate launch``): Accelerate places the
model, wraps it for distributed data parallelism and applies bf16/fp16 autocast (on this project's CPUs
bf16 autocast is the biggest speed lever). Batches are a deterministic function of ``(seed, step)`` and are
padded to their longest example, so an interrupted run that resumes from its checkpoint (trainable weights,
optimizer and scheduler state, step, losses so far) continues exactly where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cascade.files import atomic_path
from distill.dataset import IGNORE, Encoded, collate
from distill.loss import distillation_loss

if TYPE_CHECKING:
    from cascade.config import DistillSettings

CHECKPOINT = "checkpoint.pt"


@dataclass(slots=True)
class TrainResult:
    output_dir: Path
    steps: int
    completed: bool
    resumed_from: int | None
    seconds: float
    losses: list[dict[str, float | None]] = field(default_factory=list)  # per step: step, loss, ce, kd


def batch_indices(n: int, batch_size: int, step: int, seed: int) -> list[int]:
    """The examples of global step ``step``: seeded permutations, one per epoch, cut into batches."""
    per_epoch = max(n // batch_size, 1)
    epoch, offset = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    return order[offset * batch_size : offset * batch_size + batch_size]


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU multiplies bf16 matrices natively (AVX512_BF16 or AMX); False where unknown."""
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_mixed_precision(value: str) -> str:
    """``auto``: bf16 on a CUDA GPU or a CPU with native bf16, else ``no``: emulated bf16 on a CPU made a
    0.5B student's LoRA step tens of times slower than float32 (no step in 4 minutes against 10 s)."""
    if value != "auto":
        return value
    return "bf16" if torch.cuda.is_available() or cpu_has_bf16() else "no"


def fingerprint(settings: DistillSettings, data: Sequence[Encoded], init_adapter: Path | None) -> str:
    """What a checkpoint must match to be resumed: the data and every setting that shapes training."""
    digest = hashlib.sha256()
    keys = ("method", "lora_rank", "lora_alpha", "lora_dropout", "temperature", "alpha", "steps", "batch_size")
    more = ("lr", "warmup_steps", "weight_decay", "max_grad_norm", "mixed_precision", "seed")
    digest.update(json.dumps({key: getattr(settings, key) for key in keys + more}, default=str).encode())
    digest.update(str(Path(settings.base_model).resolve()).encode() + str(init_adapter).encode())
    for item in data:
        digest.update(json.dumps([item.input_ids, item.labels, item.top_ids, item.top_logprobs]).encode())
    return digest.hexdigest()


def load_trainable_model(settings: DistillSettings, init_adapter: Path | None) -> Any:
    """The base model with a fresh LoRA adapter, the serving adapter (to continue from), or all weights."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(settings.base_model, dtype=torch.float32)
    if settings.method == "full":
        return model
    from peft import LoraConfig, PeftModel, get_peft_model

    if init_adapter is not None:
        return PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
    config = LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as partial:
        torch.save(state, partial)


def train(
    settings: DistillSettings,
    data: Sequence[Encoded],
    pad_id: int,
    work_dir: Path,
    output_dir: Path,
    *,
    init_adapter: Path | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``settings.steps`` steps on ``data`` and save the result (adapter or full model) to ``output_dir``.

    ``work_dir`` holds the rolling checkpoint, written every ``checkpoint_every`` steps; a checkpoint made
    for the same data and settings is resumed. ``stop_after`` ends the run early (after that many steps in
    total) as an interruption would, leaving the checkpoint; the result then has ``completed=False``.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    if not data:
        raise ValueError("no training examples")
    started = time.perf_counter()
    accelerator = Accelerator(mixed_precision=resolve_mixed_precision(settings.mixed_precision))
    set_seed(settings.seed)
    model = load_trainable_model(settings, init_adapter)
    model.config.use_cache = False
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    warmup = settings.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)))

    work_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = work_dir / CHECKPOINT
    mark = fingerprint(settings, data, init_adapter)
    start, losses, resumed_from = 0, [], None
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        if state.get("fingerprint") == mark:
            missing = model.load_state_dict(state["trainable"], strict=False)
            if missing.unexpected_keys:
                raise RuntimeError(f"checkpoint {checkpoint_path} does not fit the model: {missing.unexpected_keys}")
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"])
            start, losses, resumed_from = int(state["step"]), list(state["losses"]), int(state["step"])
        else:
            accelerator.print(f"distill: checkpoint {checkpoint_path} is for other data or settings; starting over")
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    end = settings.steps if stop_after is None else min(settings.steps, stop_after)
    every = min(settings.checkpoint_every, settings.steps)
    bar = tqdm(
        total=settings.steps, initial=start, desc="distill", disable=not (progress and accelerator.is_main_process)
    )
    model.train()
    for step in range(start, end):
        indices = batch_indices(len(data), settings.batch_size, step, settings.seed)
        indices = indices[accelerator.process_index :: accelerator.num_processes] or indices[:1]
        batch = {
            key: value.to(accelerator.device) for key, value in collate([data[i] for i in indices], pad_id).items()
        }
        with accelerator.autocast():
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        # position t predicts token t + 1: keep only the positions that predict an answer token
        targets = batch["labels"][:, 1:]
        answer = targets != IGNORE
        top_ids = batch["top_ids"][:, 1:][answer] if "top_ids" in batch else None
        top_lps = batch["top_logprobs"][:, 1:][answer] if "top_logprobs" in batch else None
        parts = distillation_loss(
            logits[:, :-1][answer], targets[answer], top_ids, top_lps, settings.alpha, settings.temperature
        )
        accelerator.backward(parts.loss)
        accelerator.clip_grad_norm_(params, settings.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append({"step": step + 1, "loss": float(parts.loss.detach()), "ce": parts.ce, "kd": parts.kd})
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]['loss']:.4f}")
        done = step + 1
        if done % every == 0 or done == end:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                _save_checkpoint(
                    checkpoint_path,
                    {
                        "fingerprint": mark,
                        "step": done,
                        "trainable": _trainable_state(accelerator.unwrap_model(model)),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": torch.get_rng_state(),
                        "losses": losses,
                    },
                )
    bar.close()
    completed = end == settings.steps
    if completed:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            save_model(accelerator.unwrap_model(model), output_dir)
    return TrainResult(output_dir, end, completed, resumed_from, time.perf_counter() - started, losses)


def save_model(model: Any, output_dir: Path) -> None:
    """Write the adapter (LoRA: adapter_config.json + adapter_model.safetensors) or the full model, atomically."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = output_dir.with_name(output_dir.name + ".partial")
    if partial.exists():
        import shutil

        shutil.rmtree(partial)
    model.save_pretrained(partial, safe_serialization=True)
    if output_dir.exists():
        import shutil

        shutil.rmtree(output_dir)
    os.replace(partial, output_dir)
