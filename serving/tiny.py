"""The tiny pair: random-init Llama models, a few MB each, built offline in seconds, for tests.

Both models share one byte-level BPE tokenizer trained on ``tiny_corpus.txt`` (shipped with the package).
The teacher is larger and trained more steps on the corpus in the chat format than the student, so the two
give clearly different token distributions (an untrained model's is nearly flat). Everything is seeded:
the same corpus gives the same files.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

CORPUS = Path(__file__).with_name("tiny_corpus.txt")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 512
CONTEXT = 4096  # rotary positions cost nothing; large enough for any max_model_len a test picks


@dataclass(frozen=True, slots=True)
class TinyShape:
    """Architecture and training of one tiny model (head_dim = hidden / heads must be >= 32 for CPU vLLM)."""

    hidden: int
    heads: int
    layers: int
    seed: int
    train_steps: int


TINY_STUDENT = TinyShape(hidden=64, heads=2, layers=2, seed=1, train_steps=5)
TINY_TEACHER = TinyShape(hidden=128, heads=4, layers=2, seed=2, train_steps=60)


def read_pairs(corpus: Path = CORPUS) -> list[tuple[str, str]]:
    """The (question, answer) pairs of the corpus."""
    text = corpus.read_text(encoding="utf-8")
    pairs = re.findall(r"^Q: (.+)\nA: (.+)$", text, flags=re.MULTILINE)
    if not pairs:
        raise ValueError(f"{corpus}: no 'Q: ...' / 'A: ...' pairs found")
    return [(question.strip(), answer.strip()) for question, answer in pairs]


def build_tokenizer(pairs: list[tuple[str, str]]) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the corpus, wrapped as a transformers fast tokenizer with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = [f"{question}\n{answer}" for question, answer in pairs]
    bpe.train_from_iterator(lines, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
        model_max_length=CONTEXT,
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(shape: TinyShape, out_dir: Path, progress: Callable[[str], None], corpus: Path = CORPUS) -> None:
    """Write a complete HF model folder (config, safetensors, tokenizer with chat template) to ``out_dir``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    pairs = read_pairs(corpus)
    tokenizer = build_tokenizer(pairs)
    torch.manual_seed(shape.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden,
        intermediate_size=shape.hidden * 2,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        head_dim=shape.hidden // shape.heads,
        max_position_embeddings=CONTEXT,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    model = LlamaForCausalLM(config)
    if shape.train_steps:
        progress(f"training {shape.train_steps} steps on {len(pairs)} chat examples")
        _train(model, tokenizer, pairs, shape)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def _train(
    model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, pairs: list[tuple[str, str]], shape: TinyShape
) -> None:
    """Plain next-token training on the chat-formatted corpus (the whole corpus is one batch)."""
    import torch

    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], tokenize=False
        )
        for question, answer in pairs
    ]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(shape.seed)
    model.train()
    for _ in range(shape.train_steps):
        rows = torch.randperm(len(texts), generator=generator)[:16]
        loss = model(
            input_ids=batch["input_ids"][rows], attention_mask=batch["attention_mask"][rows], labels=labels[rows]
        ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
