"""From log records to training examples: dedup, replay, split, chat template, teacher top-k alignment."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from distill import dataset as ds
from logstore import TokenLogprobs, redact
from tests.distill.helpers import make_records


def _build(
    teacher: list[ds.Example], accepted: list[ds.Example], history: list[ds.Example], counts: ds.Counts
) -> ds.DistillData:
    return ds.build(
        teacher,
        accepted,
        history,
        counts,
        eval_fraction=0.2,
        min_eval=3,
        max_eval=50,
        replay_accepted_ratio=0.5,
        replay_history_ratio=0.5,
        seed=0,
    )


def test_teacher_answers_become_examples_with_token_ids_and_duplicates_collapse(tiny_tokenizer: Any) -> None:
    records = make_records(tiny_tokenizer, 10, 4)
    later = replace(
        records[0], request_id="again", time=records[-1].time, teacher=replace(records[0].teacher, text="balance")
    )
    shadowed_accept = replace(
        records[10], decision="accept", reason="confident", tier="student", teacher=records[1].teacher
    )
    teacher, accepted, counts = ds.examples_from_records([*records, later, redact(records[2]), shadowed_accept])
    by_key = {example.key: example for example in teacher}
    assert by_key[ds.prompt_key(records[0].messages)].answer == "balance"  # the latest answer wins
    assert counts.duplicates >= 2 and counts.unusable == 1  # the redacted record has no text to learn from
    assert ds.prompt_key(records[10].messages) in by_key  # a shadowed accept has a teacher answer: a target
    assert len(accepted) == 3 and all(example.source == "accepted" for example in accepted)
    example = by_key[ds.prompt_key(records[1].messages)]
    assert example.teacher_ids == tiny_tokenizer(example.answer, add_special_tokens=False)["input_ids"]
    assert example.top_ids is not None and example.top_ids[0][0] == example.teacher_ids[0]
    assert example.top_logprobs is not None and np.exp(example.top_logprobs[0][0]) == pytest.approx(0.9)


def test_split_is_stable_and_replay_is_seeded(tiny_tokenizer: Any) -> None:
    teacher, accepted, counts = ds.examples_from_records(make_records(tiny_tokenizer, 30, 10))
    history = [replace(example, source="history", key=f"old-{i}") for i, example in enumerate(teacher[:8])]
    first = _build(teacher, accepted, history, counts)
    again = _build(list(reversed(teacher)), accepted, history, ds.Counts())
    assert [e.key for e in first.eval] == [e.key for e in again.eval]
    assert len(first.eval) == 6 and not {e.key for e in first.eval} & {e.key for e in first.train}
    sources = [e.source for e in first.train]
    assert sources.count("teacher") == 24 and sources.count("accepted") == 10 and sources.count("history") == 8
    assert [e.key for e in first.train] == [e.key for e in again.train]


def test_encoding_uses_the_chat_template_and_masks_the_prompt(tiny_tokenizer: Any) -> None:
    teacher, _, _ = ds.examples_from_records(make_records(tiny_tokenizer, 1, 0))
    example = teacher[0]
    encoded = ds.encode(tiny_tokenizer, example)
    prompt = tiny_tokenizer.apply_chat_template(example.messages, tokenize=False, add_generation_prompt=True)
    n_prompt = len(tiny_tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert encoded.labels[:n_prompt] == [ds.IGNORE] * n_prompt
    answer = encoded.labels[n_prompt:]
    assert answer == [*example.teacher_ids, tiny_tokenizer.eos_token_id]
    assert tiny_tokenizer.decode(encoded.input_ids) == prompt + example.answer + "<|im_end|>"
    # the teacher's top-k sit on the answer tokens they were logged for; the end token has none
    assert encoded.top_ids is not None and encoded.top_ids[n_prompt][0] == answer[0] and encoded.top_ids[-1] == []

    batch = ds.collate(
        [encoded, ds.encode(tiny_tokenizer, replace(example, answer="transfer now", teacher_ids=None))], 0
    )
    assert batch["input_ids"].shape == batch["labels"].shape == batch["top_ids"].shape[:2]
    assert int(batch["attention_mask"][0].sum()) == len(encoded.input_ids)
    assert np.isnan(batch["top_logprobs"][1].numpy()).all()  # a text-only example carries no KD targets


def test_tokens_that_do_not_decode_to_the_answer_mean_text_only(tiny_tokenizer: Any) -> None:
    teacher, _, _ = ds.examples_from_records(make_records(tiny_tokenizer, 1, 0))
    other_tokenizer = replace(teacher[0], teacher_ids=[5, 6, 7])  # ids from a different vocabulary
    assert not ds.tokenizers_match(tiny_tokenizer, other_tokenizer)
    encoded = ds.encode(tiny_tokenizer, other_tokenizer)
    assert encoded.top_ids is None
    assert tiny_tokenizer.decode([t for t in encoded.labels if t != ds.IGNORE]).startswith(teacher[0].answer)


def test_string_tokens_give_no_token_ids() -> None:
    top = np.log(np.array([[0.5, 0.2]], dtype=np.float32))
    logged = TokenLogprobs(top[:, 0], top, ["Paris"], [["Paris", "Lyon"]])
    assert ds.teacher_token_ids(logged) is None
    with_ids = TokenLogprobs(top[:, 0], top, ["token_id:7"], [["token_id:7", "token_id:7"]])
    parsed = ds.teacher_token_ids(with_ids)
    assert parsed is not None and parsed[1] == [[7]]  # a repeated alternative is kept once
