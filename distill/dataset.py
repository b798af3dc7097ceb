"""The training set of one cycle: what the teacher answered since the last promotion, plus replay.

From the log store's records of the window (:func:`logstore.iter_records`):

- **teacher** examples: every record with a teacher answer (escalations, and shadowed accepted requests);
  the teacher's text is the target. When the teacher's tokens were logged as ids (vLLM's
  ``return_tokens_as_token_ids`` gives ``"token_id:1234"``) and they decode, with the student's tokenizer,
  to the teacher's text, the tokenizers match: the ids are the target tokens and the per-token top-k
  logprobs are kept for knowledge distillation.
- **accepted** examples: a seeded sample of accepted student answers (the student's own text), replayed so
  that what already works is not forgotten.
- **history** examples: a seeded sample of earlier cycles' teacher examples (kept under ``work_dir/data``).

Examples are deduplicated by their prompt (the latest teacher answer wins; a teacher answer beats a
replayed one). A hash-ordered share of the new teacher examples is held out for the gate. Each example is
rendered with the student's own chat template; the loss covers the answer tokens only.

Tool calls: a request that offered ``tools`` keeps them with its example, and an agent conversation keeps its
assistant ``tool_calls`` and ``role: tool`` turns. When the teacher answered with tool calls, the target is the
assistant turn carrying those calls, rendered by the student's chat template with the tools (the format the
student is asked in, e.g. Qwen2.5's Hermes ``<tool_call>`` JSON); the teacher's top-k logprobs are used when
its logged tokens decode to exactly that rendering.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cascade.files import write_atomic
from cascade.terms import Decision
from logstore import LogRecord, TokenLogprobs, iter_records
from router.structured import parse_arguments

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Source = Literal["teacher", "accepted", "history"]
TOKEN_ID_PREFIX = "token_id:"
IGNORE = -100


@dataclass(slots=True)
class Example:
    """One prompt and the answer to teach, with the teacher's token ids and top-k logprobs when known."""

    key: str
    messages: list[dict[str, Any]]
    answer: str
    source: Source
    request_id: str | None = None
    finish_reason: str | None = None
    teacher_ids: list[int] | None = None
    top_ids: list[list[int]] | None = None
    top_logprobs: list[list[float]] | None = None
    tools: list[dict[str, Any]] | None = None  # the request's tools (OpenAI format)
    tool_calls: list[dict[str, Any]] | None = None  # the answer's tool calls (OpenAI format), if it made any

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> Example:
        return cls(**json.loads(line))


@dataclass(slots=True)
class Counts:
    records: int = 0
    teacher: int = 0
    accepted_available: int = 0
    accepted: int = 0
    history_available: int = 0
    history: int = 0
    duplicates: int = 0
    unusable: int = 0
    with_logprobs: int = 0
    train: int = 0
    eval: int = 0
    too_long: int = 0
    unrenderable: int = 0  # tools or tool calls the student's chat template cannot show


@dataclass(slots=True)
class DistillData:
    train: list[Example]
    eval: list[Example]
    new: list[Example]  # this window's teacher examples (train and eval), kept for later cycles' replay
    counts: Counts = field(default_factory=Counts)


def prompt_key(messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None) -> str:
    """A stable hash of the prompt: roles and whitespace-normalised contents, plus the tool calls, tool results'
    ids and the tools offered where there are any (a plain chat's key does not depend on them)."""
    canonical: list[Any] = []
    for m in messages:
        entry: list[Any] = [m["role"], " ".join((m.get("content") or "").split())]
        extra = {k: m[k] for k in _TOOL_FIELDS if m.get(k) is not None}
        canonical.append([*entry, extra] if extra else entry)
    if tools:
        canonical.append(["tools", tools])
    return hashlib.sha256(json.dumps(canonical, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


_TOOL_FIELDS = ("tool_calls", "tool_call_id", "name")


def _prompt(record: LogRecord) -> list[dict[str, Any]] | None:
    if record.redacted or not record.messages:
        return None
    out = []
    for message in record.messages:
        role, content = message.get("role"), message.get("content")
        calls_only = content is None and bool(message.get("tool_calls"))
        if not isinstance(role, str) or not (isinstance(content, str) or calls_only):
            return None  # multi-part content: not supported as a training prompt
        kept = {"role": role, "content": content or ""}
        out.append(kept | {k: message[k] for k in _TOOL_FIELDS if message.get(k) is not None})
    return out


def _tools(record: LogRecord) -> list[dict[str, Any]] | None:
    tools = record.params.get("tools")
    if not isinstance(tools, list):
        return None
    return [tool for tool in tools if isinstance(tool, dict)] or None


def _parse_id(token: object) -> int | None:
    if isinstance(token, int):
        return token
    if isinstance(token, str) and token.startswith(TOKEN_ID_PREFIX):
        try:
            return int(token[len(TOKEN_ID_PREFIX) :])
        except ValueError:
            return None
    return None


def teacher_token_ids(logprobs: TokenLogprobs) -> tuple[list[int], list[list[int]], list[list[float]]] | None:
    """(answer ids, top-k ids, top-k logprobs) when every token was logged as an id, else None."""
    if logprobs.tokens is None or logprobs.top_tokens is None:
        return None
    ids = [_parse_id(token) for token in logprobs.tokens]
    if any(i is None for i in ids):
        return None
    top_ids: list[list[int]] = []
    top_lps: list[list[float]] = []
    for position, alternatives in enumerate(logprobs.top_tokens):
        seen: dict[int, float] = {}
        for j, token in enumerate(alternatives):
            tid = _parse_id(token)
            value = float(logprobs.top_logprobs[position, j])
            if tid is None:
                return None
            if tid not in seen and value == value:  # skip duplicates and NaN padding
                seen[tid] = value
        top_ids.append(list(seen))
        top_lps.append(list(seen.values()))
    return [i for i in ids if i is not None], top_ids, top_lps


def examples_from_records(records: Iterable[LogRecord]) -> tuple[list[Example], list[Example], Counts]:
    """(teacher examples, accepted-student examples), each deduplicated by prompt, and the counts."""
    counts = Counts()
    teacher: dict[str, Example] = {}
    accepted: dict[str, Example] = {}
    for record in records:
        counts.records += 1
        if record.redacted:  # no text left to learn from
            counts.unusable += 1
            continue
        messages, tools = _prompt(record), _tools(record)
        if record.teacher is not None and (record.teacher.text or record.teacher.tool_calls):
            if messages is None or record.status != "ok" or record.teacher.invalid is not None:
                counts.unusable += 1  # an invalid tool call or JSON answer is not one to teach
                continue
            example = Example(
                prompt_key(messages, tools), messages, record.teacher.text or "", "teacher", record.request_id,
                record.teacher.finish_reason, tools=tools, tool_calls=record.teacher.tool_calls or None,
            )  # fmt: skip
            if record.teacher.logprobs is not None and (parsed := teacher_token_ids(record.teacher.logprobs)):
                example.teacher_ids, example.top_ids, example.top_logprobs = parsed
            if example.key in teacher:
                counts.duplicates += 1
            teacher[example.key] = example  # records come in time order: the latest answer wins
        elif (
            record.decision == Decision.ACCEPT
            and record.student is not None
            and (record.student.text or record.student.tool_calls)
        ):
            if messages is None or record.status != "ok":
                counts.unusable += 1
                continue
            key = prompt_key(messages, tools)
            if key in accepted:
                counts.duplicates += 1
            accepted[key] = Example(
                key, messages, record.student.text or "", "accepted", record.request_id, tools=tools,
                tool_calls=record.student.tool_calls or None,
            )  # fmt: skip
    for key in teacher.keys() & accepted.keys():
        counts.duplicates += 1
        del accepted[key]
    counts.teacher = len(teacher)
    counts.accepted_available = len(accepted)
    return list(teacher.values()), list(accepted.values()), counts


async def read_records(url: str, since: datetime | None, until: datetime | None) -> list[LogRecord]:
    return [record async for record in iter_records(url, since, until)]


def read_history(folder: Path, exclude: str | None = None) -> list[Example]:
    """Earlier cycles' teacher examples (``folder/<run id>.jsonl``), oldest first."""
    out: list[Example] = []
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.jsonl")):
        if path.stem == exclude:
            continue
        out.extend(Example.from_json(line) for line in path.read_text().splitlines() if line.strip())
    for example in out:
        example.source = "history"
    return out


def write_examples(path: Path, examples: Iterable[Example]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(example.to_json() + "\n" for example in examples))


def read_examples(path: Path) -> list[Example]:
    return [Example.from_json(line) for line in path.read_text().splitlines() if line.strip()]


def build(
    teacher: list[Example],
    accepted: list[Example],
    history: list[Example],
    counts: Counts,
    *,
    eval_fraction: float,
    min_eval: int,
    max_eval: int,
    replay_accepted_ratio: float,
    replay_history_ratio: float,
    seed: int,
) -> DistillData:
    """Split the teacher examples (hash order) and add the seeded replay samples to the training part."""
    ordered = sorted(teacher, key=lambda example: example.key)
    n_eval = min(max(round(len(ordered) * eval_fraction), min_eval), max_eval, max(len(ordered) - 1, 0))
    held_out, train = ordered[:n_eval], ordered[n_eval:]
    rng = random.Random(seed)
    known = {example.key for example in teacher}
    history = [example for example in history if example.key not in known]
    unique_history = list({example.key: example for example in history}.values())  # latest earlier answer
    counts.history_available = len(unique_history)
    take_accepted = min(len(accepted), round(len(train) * replay_accepted_ratio))
    take_history = min(len(unique_history), round(len(train) * replay_history_ratio))
    replay = rng.sample(accepted, take_accepted) + rng.sample(unique_history, take_history)
    counts.accepted, counts.history = take_accepted, take_history
    counts.with_logprobs = sum(example.top_ids is not None for example in teacher)
    train = train + replay
    rng.shuffle(train)
    counts.train, counts.eval = len(train), len(held_out)
    return DistillData(train, held_out, ordered, counts)


# -- rendering with the student's chat template ---------------------------------------------------------


@dataclass(slots=True)
class Encoded:
    """Token ids of prompt + answer; ``labels`` is IGNORE on the prompt; top-k aligned with the tokens."""

    input_ids: list[int]
    labels: list[int]
    top_ids: list[list[int]] | None = None  # per token of input_ids ([] where there is no teacher top-k)
    top_logprobs: list[list[float]] | None = None


def _for_template(message: dict[str, Any]) -> dict[str, Any]:
    """Chat templates (Qwen2.5's, Llama 3's) write a call's arguments with ``tojson``: they want the object,
    where OpenAI's messages carry it as a JSON string."""
    calls = message.get("tool_calls")
    if not calls:
        return message
    rendered = []
    for call in calls:
        function = dict(call.get("function") or {})
        parsed, _ = parse_arguments(function.get("arguments"))
        if parsed is not None:  # else left as it was: the template writes what the model wrote
            function["arguments"] = parsed
        rendered.append({**call, "function": function})
    return {**message, "tool_calls": rendered}


def _render(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[dict[str, Any]],
    generation_prompt: bool,
    tools: list[dict[str, Any]] | None = None,
) -> list[int]:
    offered: list[Any] | None = tools  # transformers' own annotation is a list of dicts or callables
    text = tokenizer.apply_chat_template(
        [_for_template(m) for m in messages], tools=offered, tokenize=False, add_generation_prompt=generation_prompt
    )
    assert isinstance(text, str)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_ids(
    tokenizer: PreTrainedTokenizerBase, messages: Sequence[dict[str, Any]], tools: list[dict[str, Any]] | None = None
) -> list[int]:
    return _render(tokenizer, messages, True, tools)


def _answer_message(example: Example) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": example.answer}
    return message | ({"tool_calls": example.tool_calls} if example.tool_calls else {})


def _rendered_answer(tokenizer: PreTrainedTokenizerBase, example: Example, prompt: list[int]) -> list[int] | None:
    """The answer's tokens as the chat template renders the assistant turn after the prompt (None when the
    template renders the history differently from the prompt)."""
    full = _render(tokenizer, [*example.messages, _answer_message(example)], False, example.tools)
    if full[: len(prompt)] == prompt and len(full) > len(prompt):
        return full[len(prompt) :]
    return None


def tokenizers_match(tokenizer: PreTrainedTokenizerBase, example: Example, prompt: list[int] | None = None) -> bool:
    """The teacher's ids decode, with the student's tokenizer, to the teacher's answer: its text, or for a tool
    call the assistant turn the chat template renders (``prompt``: the example's prompt ids, to find it)."""
    if example.teacher_ids is None:
        return False
    vocab = len(tokenizer)
    if any(not 0 <= i < vocab for i in example.teacher_ids):
        return False
    decoded = str(tokenizer.decode(example.teacher_ids, skip_special_tokens=True))
    if not example.tool_calls:
        return decoded.strip() == example.answer.strip()
    prompt = prompt_ids(tokenizer, example.messages, example.tools) if prompt is None else prompt
    rendered = _rendered_answer(tokenizer, example, prompt)
    if rendered is None:
        return False
    return decoded.strip() == str(tokenizer.decode(rendered, skip_special_tokens=True)).strip()


class Unrenderable(ValueError):
    """The student's chat template cannot show this example's tools or tool calls."""


def _names(example: Example) -> tuple[list[str], list[str]]:
    def name(item: dict[str, Any]) -> str:
        function = item.get("function")
        return str(function.get("name")) if isinstance(function, dict) else ""

    return [name(tool) for tool in example.tools or []], [name(call) for call in example.tool_calls or []]


def _check_tools_shown(tokenizer: PreTrainedTokenizerBase, example: Example, prompt: list[int]) -> None:
    """A template without tool support renders the tools and calls as nothing: training on that would teach
    the student to answer a tool request with an empty turn."""
    tools, calls = _names(example)
    if not tools and not calls:
        return
    prompt_text = str(tokenizer.decode(prompt))
    if any(name not in prompt_text for name in tools):
        raise Unrenderable("the chat template does not render the request's tools")
    rendered = _rendered_answer(tokenizer, example, prompt)
    answer_text = str(tokenizer.decode(rendered)) if rendered is not None else ""
    if any(name not in answer_text for name in calls):
        raise Unrenderable("the chat template does not render the answer's tool calls")


def encode(tokenizer: PreTrainedTokenizerBase, example: Example) -> Encoded:
    """Render one example: the prompt with the generation prompt, then the answer tokens and the end token.
    Raises :class:`Unrenderable` for tools or tool calls the template cannot show."""
    prompt = prompt_ids(tokenizer, example.messages, example.tools)
    _check_tools_shown(tokenizer, example, prompt)
    eos = tokenizer.eos_token_id
    if tokenizers_match(tokenizer, example, prompt):
        assert example.teacher_ids is not None and example.top_ids is not None and example.top_logprobs is not None
        answer = list(example.teacher_ids)
        top_ids: list[list[int]] = [[] for _ in prompt] + [list(row) for row in example.top_ids]
        top_lps: list[list[float]] = [[] for _ in prompt] + [list(row) for row in example.top_logprobs]
        if eos is not None and (not answer or answer[-1] != eos) and example.finish_reason != "length":
            answer.append(eos)
            top_ids.append([])
            top_lps.append([])
        return Encoded(prompt + answer, [IGNORE] * len(prompt) + answer, top_ids, top_lps)
    rendered = _rendered_answer(tokenizer, example, prompt)
    if rendered is not None:
        answer = rendered
    else:  # a template that renders history differently: the answer's own tokens and the end token
        answer = list(tokenizer(example.answer, add_special_tokens=False)["input_ids"])
        if eos is not None:
            answer.append(eos)
    return Encoded(prompt + answer, [IGNORE] * len(prompt) + answer)


def encode_all(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], max_len: int
) -> tuple[list[Encoded], int, int]:
    """Encode the examples; those longer than ``max_len`` tokens, and those whose tools the template cannot
    show, are skipped: (encoded, too long, unrenderable)."""
    out, too_long, unrenderable = [], 0, 0
    for example in examples:
        try:
            encoded = encode(tokenizer, example)
        except Unrenderable:
            unrenderable += 1
            continue
        if len(encoded.input_ids) > max_len:
            too_long += 1
            continue
        out.append(encoded)
    return out, too_long, unrenderable


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, Any]:
    """Pad a batch to its longest example; top-k as (B, L, K) ids and logprobs (NaN where absent)."""
    import torch

    longest = max(len(item.input_ids) for item in batch)
    k = max((len(row) for item in batch if item.top_ids for row in item.top_ids), default=0)
    input_ids = torch.full((len(batch), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), longest), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), longest), dtype=torch.long)
    top_ids = torch.zeros((len(batch), longest, k), dtype=torch.long)
    top_lps = torch.full((len(batch), longest, k), float("nan"))
    for b, item in enumerate(batch):
        n = len(item.input_ids)
        input_ids[b, :n] = torch.tensor(item.input_ids)
        labels[b, :n] = torch.tensor(item.labels)
        mask[b, :n] = 1
        if item.top_ids is not None and item.top_logprobs is not None:
            for t, (ids, lps) in enumerate(zip(item.top_ids, item.top_logprobs, strict=True)):
                if ids:
                    top_ids[b, t, : len(ids)] = torch.tensor(ids)
                    top_lps[b, t, : len(lps)] = torch.tensor(lps)
    out: dict[str, Any] = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
    if k:
        out["top_ids"], out["top_logprobs"] = top_ids, top_lps
    return out


@dataclass(frozen=True, slots=True)
class EvalItem:
    """A gate question: the prompt (and the tools it offers) and the reference answer (text, tool calls)."""

    messages: list[dict[str, Any]]
    reference: str
    tools: list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None

    @property
    def request(self) -> dict[str, Any]:
        return {"messages": self.messages} | ({"tools": self.tools} if self.tools else {})

    @property
    def reference_message(self) -> dict[str, Any]:
        return {"role": "assistant", "content": self.reference, "tool_calls": self.tool_calls}


def eval_items(examples: Iterable[Example]) -> list[EvalItem]:
    return [EvalItem(example.messages, example.answer, example.tools, example.tool_calls) for example in examples]


def read_regression_set(path: Path) -> list[EvalItem]:
    """A fixed JSONL set: one ``{"messages": [...], "reference": "..."}`` per line, optionally with the
    ``tools`` offered and the reference's ``tool_calls`` (OpenAI format; ``reference`` may then be empty)."""
    items = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            messages = [
                {"role": m["role"], "content": m["content"] or ""} | {k: m[k] for k in _TOOL_FIELDS if m.get(k)}
                for m in row["messages"]
            ]
            items.append(EvalItem(messages, row["reference"], row.get("tools"), row.get("tool_calls")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: expected {{messages, reference}}: {exc}") from None
    return items
