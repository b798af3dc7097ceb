"""From log records to training examples: dedup, replay, split, chat template, teacher top-k alignment."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from distill import dataset as ds
from distill.gate import grade
from logstore import LogRecord, TierAnswer, TokenLogprobs, redact
from router.agreement import exact_match as exact
from serving.models import prepare_pair
from tests.distill.helpers import make_records
from tests.serving.helpers import MODELS_DIR, say
from tests.structured import WEATHER


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


# -- tool calls -------------------------------------------------------------------------------------------------

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}


@pytest.fixture(scope="module")
def qwen_tokenizer() -> Any:
    """Qwen2.5-Coder-0.5B-Instruct's tokenizer (the small pair's teacher): a chat template with tools."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(prepare_pair("small", MODELS_DIR, say).teacher.path)


def tool_record(request_id: str, messages: list[dict[str, Any]], teacher: TierAnswer) -> LogRecord:
    return LogRecord(
        request_id, datetime(2026, 12, 4, tzinfo=UTC), "escalate", "not_confident", "teacher", messages,
        params={"model": "cascade", "tools": [WEATHER]}, teacher=teacher,
    )  # fmt: skip


def test_a_tool_call_escalation_is_taught_as_the_template_renders_the_call(qwen_tokenizer: Any) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    teacher, _, counts = ds.examples_from_records([tool_record("t1", ask, TierAnswer("teacher", tool_calls=[CALL]))])
    [example] = teacher
    assert counts.unusable == 0 and example.tools == [WEATHER] and example.tool_calls == [CALL]
    invalid = TierAnswer("teacher", tool_calls=[CALL], invalid="its arguments do not match the schema")
    assert ds.examples_from_records([tool_record("t0", ask, invalid)])[2].unusable == 1  # never taught
    assert example.key != ds.prompt_key(ask)  # the tools offered are part of the prompt
    encoded = ds.encode(qwen_tokenizer, example)
    prompt = [i for i, label in zip(encoded.input_ids, encoded.labels, strict=True) if label == ds.IGNORE]
    assert '"name": "get_weather"' in qwen_tokenizer.decode(prompt)  # the tools are in the prompt
    answer = qwen_tokenizer.decode([label for label in encoded.labels if label != ds.IGNORE])
    assert answer.startswith('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>')
    assert answer.rstrip().endswith("<|im_end|>") and encoded.top_ids is None

    # the teacher's logged tokens are that rendering: its top-k is kept for distillation
    ids = qwen_tokenizer(answer.removesuffix("\n").removesuffix("<|im_end|>"), add_special_tokens=False)["input_ids"]
    tokens = [f"token_id:{i}" for i in ids]
    logprobs = TokenLogprobs(
        tokens=tokens, logprobs=np.full(len(ids), -0.1), top_tokens=[[t] for t in tokens],
        top_logprobs=np.full((len(ids), 1), -0.1),
    )  # fmt: skip
    with_logprobs = tool_record("t2", ask, TierAnswer("teacher", tool_calls=[CALL], logprobs=logprobs))
    [kd] = ds.examples_from_records([with_logprobs])[0]
    assert ds.tokenizers_match(qwen_tokenizer, kd) and ds.encode(qwen_tokenizer, kd).top_ids is not None


def test_an_agent_conversation_keeps_its_calls_and_results_and_a_plain_key_is_unchanged(
    qwen_tokenizer: Any, tiny_tokenizer: Any
) -> None:
    turns = [
        {"role": "user", "content": "Weather in Paris, then tell me."},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'},
    ]
    record = tool_record("a1", turns, TierAnswer("teacher", text="It is 21 °C in Paris."))
    [example] = ds.examples_from_records([record])[0]
    assert example.messages[1]["tool_calls"] == [CALL] and example.messages[2]["tool_call_id"] == "call_1"
    text = qwen_tokenizer.decode(ds.encode(qwen_tokenizer, example).input_ids)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in text
    assert '<tool_response>\n{"temp_c": 21}\n</tool_response>' in text and "It is 21 °C in Paris." in text
    with pytest.raises(ds.Unrenderable):  # the tiny test template has no tools: never train on an empty turn
        ds.encode(tiny_tokenizer, example)
    assert ds.encode_all(tiny_tokenizer, [example], 512)[1:] == (0, 1)
    plain = [{"role": "user", "content": "  hello   there "}]
    old_key = hashlib.sha256(json.dumps([["user", "hello there"]], ensure_ascii=False).encode()).hexdigest()
    assert ds.prompt_key(plain) == old_key  # earlier cycles' replay history keeps its keys


def test_the_gate_grades_tool_calls_by_tool_call_agreement() -> None:
    item = ds.EvalItem([{"role": "user", "content": "Weather in Paris?"}], "", [WEATHER], [CALL])
    assert grade(item, '<tool_call>\n{"arguments": {"city":"Paris"}, "name": "get_weather"}\n</tool_call>', exact)
    assert not grade(item, '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Lyon"}}\n</tool_call>', exact)
    assert not grade(item, "It is sunny in Paris.", exact)  # no call where the reference made one
    assert not grade(item, "<tool_call>\nnot json\n</tool_call>", exact)
    text_item = ds.EvalItem([{"role": "user", "content": "Hi"}], "Hello")
    assert grade(text_item, "hello", exact) and not grade(text_item, "bye", exact)
