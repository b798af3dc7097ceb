"""An LLM judge for open-ended answers: the prompts it is asked and how its verdicts are read. Pure functions:
the model call lives with the callers that may speak HTTP (:mod:`evaluation.judge`).

**Pairwise** (MT-Bench's pair prompt, Zheng et al. 2023): the judge sees the conversation and two answers and
says which is better, ``[[A]]``, ``[[B]]`` or ``[[C]]`` for a tie. It is asked twice, the answers swapped
(position bias is the best-known failure of LLM judges), and :func:`combine` keeps a verdict only when the two
orders agree: the student's answer is *at least as good* when it wins or ties in both orders (a win in one
order and a tie in the other counts too); any other pair is ``inconsistent``, and a reply without a verdict is
``failed``. Only ``not_worse`` counts as agreement, so a judge that cannot decide never lets an answer pass.
**Reference-guided** for maths and code (MT-Bench's practice): a reference answer (the teacher's, or a gold
one) is shown to the judge as the answer to check against.

**Single-answer grading**: a 1-10 rating of one answer, with a reference when one is given, read from
``[[n]]`` (or ``Rating: n``).

A verdict may also come as JSON through structured output: ``{"verdict": "A" | "B" | "tie"}``.
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum
from typing import Any

Messages = list[dict[str, Any]]

PAIR_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. You should choose the assistant that follows the user's "
    "instructions and answers the user's question better. Your evaluation should consider factors such as "
    "the helpfulness, relevance, accuracy, depth, creativity, and level of detail of their responses. Avoid "
    "any position biases and ensure that the order in which the responses were presented does not influence "
    "your decision. Do not allow the length of the responses to influence your evaluation. Be as objective as "
    'possible. Output your final verdict by strictly following this format: "[[A]]" if assistant A is '
    'better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)
PAIR_REFERENCE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants "
    "to the user question displayed below. Your evaluation should consider correctness and helpfulness. You "
    "will be given a reference answer, assistant A's answer, and assistant B's answer. Your job is to "
    "evaluate which assistant's answer is better. Compare both assistants' answers with the reference answer, "
    "identify their mistakes. Avoid any position biases and ensure that the order in which the responses were "
    "presented does not influence your decision. Do not allow the length of the responses to influence your "
    "evaluation. Be as objective as possible. Output your final verdict by strictly following this format: "
    '"[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.'
)
SINGLE_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the response provided by an AI assistant to "
    "the user question displayed below. Your evaluation should consider factors such as the helpfulness, "
    "relevance, accuracy, depth, creativity, and level of detail of the response. {reference}Be as objective "
    'as possible. Rate the response on a scale of 1 to 10 by strictly following this format: "[[rating]]", '
    'for example: "Rating: [[5]]".'
)
BRIEF = " Reply with the verdict tag only, without an explanation."
SINGLE_REFERENCE = "Compare the response with the reference answer, which is correct, and identify its mistakes. "


class Verdict(StrEnum):
    """One judge reply to one order of a pair."""

    A = "A"
    B = "B"
    TIE = "tie"
    FAILED = "failed"  # no verdict could be read


class Outcome(StrEnum):
    """Both orders of a pair, the student's answer against the teacher's."""

    NOT_WORSE = "not_worse"  # the student's answer is at least as good, in both orders
    WORSE = "worse"  # the teacher's answer is better in one order at least, and the student's in neither
    INCONSISTENT = "inconsistent"  # the two orders disagree
    FAILED = "failed"  # a reply had no verdict

    @property
    def agrees(self) -> bool:
        return self is Outcome.NOT_WORSE


def conversation_text(messages: Messages) -> str:
    """The conversation as the judge reads it: each turn's role and text (a tool call as its JSON)."""
    lines = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):  # OpenAI content parts
            content = " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        if message.get("tool_calls"):
            content = f"{content or ''} {json.dumps(message['tool_calls'], ensure_ascii=False)}".strip()
        lines.append(f"{message.get('role', 'user')}: {content or ''}")
    return "\n".join(lines)


def pairwise_prompt(
    messages: Messages, answer_a: str, answer_b: str, reference: str | None = None, brief: bool = False
) -> Messages:
    """The chat messages asking the judge which of two answers to the conversation is better; ``brief`` asks for
    the verdict tag alone (a few tokens: what a small local judge can afford on a CPU)."""
    parts = [f"[User Question]\n{conversation_text(messages)}\n"]
    if reference is not None:
        parts.append(f"[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]\n")
    parts.append(f"[The Start of Assistant A's Answer]\n{answer_a}\n[The End of Assistant A's Answer]\n")
    parts.append(f"[The Start of Assistant B's Answer]\n{answer_b}\n[The End of Assistant B's Answer]")
    system = (PAIR_SYSTEM if reference is None else PAIR_REFERENCE_SYSTEM) + (BRIEF if brief else "")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(parts)}]


def single_prompt(messages: Messages, answer: str, reference: str | None = None) -> Messages:
    """The chat messages asking the judge to rate one answer from 1 to 10."""
    parts = [f"[Question]\n{conversation_text(messages)}\n"]
    if reference is not None:
        parts.append(f"[The Start of Reference Answer]\n{reference}\n[The End of Reference Answer]\n")
    parts.append(f"[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]")
    system = SINGLE_SYSTEM.format(reference=SINGLE_REFERENCE if reference is not None else "")
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n".join(parts)}]


_PAIR_TAG = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_RATING_TAG = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_RATING_WORD = re.compile(r"[Rr]ating:\s*\[?\s*(\d+(?:\.\d+)?)")
_JSON_VERDICTS = {"a": Verdict.A, "b": Verdict.B, "tie": Verdict.TIE, "c": Verdict.TIE}


def parse_verdict(text: str | None) -> Verdict:
    """A pairwise reply's verdict: its last ``[[A]]``/``[[B]]``/``[[C]]`` tag, or a JSON ``{"verdict": ...}``."""
    if not text:
        return Verdict.FAILED
    tags = _PAIR_TAG.findall(text)
    if tags:
        return {"A": Verdict.A, "B": Verdict.B, "C": Verdict.TIE}[tags[-1]]
    try:
        value = json.loads(text)
    except ValueError:
        return Verdict.FAILED
    if isinstance(value, dict) and isinstance(value.get("verdict"), str):
        return _JSON_VERDICTS.get(value["verdict"].strip().lower(), Verdict.FAILED)
    return Verdict.FAILED


def parse_rating(text: str | None) -> float | None:
    """A single-answer reply's rating in [1, 10]: its last ``[[n]]``, else ``Rating: n``; None otherwise."""
    if not text:
        return None
    found = _RATING_TAG.findall(text) or _RATING_WORD.findall(text)
    if not found:
        return None
    rating = float(found[-1])
    return rating if 1 <= rating <= 10 else None


def combine(student_first: Verdict, student_second: Verdict) -> Outcome:
    """The pair's outcome from the verdict with the student's answer as A and the one with it as B."""
    if Verdict.FAILED in (student_first, student_second):
        return Outcome.FAILED
    student = {Verdict.A: 1, Verdict.TIE: 0, Verdict.B: -1}[student_first]
    swapped = {Verdict.B: 1, Verdict.TIE: 0, Verdict.A: -1}[student_second]
    if student >= 0 and swapped >= 0:
        return Outcome.NOT_WORSE
    if student <= 0 and swapped <= 0:
        return Outcome.WORSE
    return Outcome.INCONSISTENT


def cache_key(judge_model: str, prompt: Messages) -> str:
    """The content hash a judge reply is cached under: the judge's model and the exact prompt."""
    payload = json.dumps([judge_model, prompt], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
