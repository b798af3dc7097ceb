"""The judge's prompts and verdict parsing on fixed texts (router/judge.py)."""

from __future__ import annotations

import pytest

from router.judge import (
    Outcome,
    Verdict,
    cache_key,
    combine,
    conversation_text,
    pairwise_prompt,
    parse_rating,
    parse_verdict,
    single_prompt,
)

CONVERSATION = [{"role": "user", "content": "Write a haiku about rain."}]


def test_the_pairwise_prompt_shows_the_question_and_both_answers_in_order() -> None:
    prompt = pairwise_prompt(CONVERSATION, "first answer", "second answer")
    assert [m["role"] for m in prompt] == ["system", "user"]
    assert '"[[A]]" if assistant A is better' in prompt[0]["content"] and "position biases" in prompt[0]["content"]
    user = prompt[1]["content"]
    assert user.startswith("[User Question]\nuser: Write a haiku about rain.\n")
    assert user.index("first answer") < user.index("[The End of Assistant A's Answer]") < user.index("second answer")
    assert "Reference" not in user
    brief = pairwise_prompt(CONVERSATION, "first answer", "second answer", brief=True)
    assert brief[0]["content"].endswith("verdict tag only, without an explanation.") and brief[1] == prompt[1]


def test_a_reference_guided_prompt_shows_the_reference_first() -> None:
    prompt = pairwise_prompt([{"role": "user", "content": "2+2?"}], "4", "5", reference="4, since 2+2=4")
    assert "reference answer" in prompt[0]["content"]
    user = prompt[1]["content"]
    assert user.index("[The Start of Reference Answer]\n4, since 2+2=4") < user.index("Assistant A's Answer")


def test_single_grading_asks_for_a_rating_with_or_without_a_reference() -> None:
    plain, guided = single_prompt(CONVERSATION, "drops"), single_prompt(CONVERSATION, "drops", reference="rain")
    assert "Rating: [[5]]" in plain[0]["content"] and "reference answer" not in plain[0]["content"]
    assert "reference answer" in guided[0]["content"]
    assert "[The Start of Reference Answer]\nrain" in guided[1]["content"]


def test_a_conversation_keeps_every_turn_and_tool_calls() -> None:
    call = [{"type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}]
    text = conversation_text(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {"role": "assistant", "content": None, "tool_calls": call},
            {"role": "tool", "content": "rain"},
        ]
    )
    assert text.splitlines()[:2] == ["system: Be brief.", "user: Weather?"]
    assert '"name": "weather"' in text and text.endswith("tool: rain")


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("Assistant A explains more. [[A]]", Verdict.A),
        ("[[A]] at first, but on reflection [[B]]", Verdict.B),  # the last tag is the verdict
        ("It is a tie: [[C]]", Verdict.TIE),
        ("[[ B ]]", Verdict.B),
        ('{"verdict": "tie"}', Verdict.TIE),
        ('{"verdict": "A"}', Verdict.A),
        ('{"verdict": "neither"}', Verdict.FAILED),
        ("Assistant A is better.", Verdict.FAILED),  # no tag: never guessed from prose
        ("[A]", Verdict.FAILED),
        ("", Verdict.FAILED),
        (None, Verdict.FAILED),
    ],
)
def test_verdicts_are_read_strictly(reply: str | None, verdict: Verdict) -> None:
    assert parse_verdict(reply) is verdict


@pytest.mark.parametrize(
    ("reply", "rating"),
    [("Rating: [[7]]", 7.0), ("[[8.5]]", 8.5), ("Rating: 6", 6.0), ("[[11]]", None), ("good", None), (None, None)],
)
def test_ratings_are_read_in_range(reply: str | None, rating: float | None) -> None:
    assert parse_rating(reply) == rating


@pytest.mark.parametrize(
    ("first", "second", "outcome"),
    [
        (Verdict.A, Verdict.B, Outcome.NOT_WORSE),  # the student wins in both orders
        (Verdict.TIE, Verdict.TIE, Outcome.NOT_WORSE),  # ties are explicit, and at least as good
        (Verdict.A, Verdict.TIE, Outcome.NOT_WORSE),
        (Verdict.B, Verdict.A, Outcome.WORSE),
        (Verdict.TIE, Verdict.A, Outcome.WORSE),
        (Verdict.A, Verdict.A, Outcome.INCONSISTENT),  # always the first position: position bias
        (Verdict.B, Verdict.B, Outcome.INCONSISTENT),
        (Verdict.A, Verdict.FAILED, Outcome.FAILED),
    ],
)
def test_both_orders_must_agree(first: Verdict, second: Verdict, outcome: Outcome) -> None:
    result = combine(first, second)
    assert result is outcome and result.agrees == (outcome is Outcome.NOT_WORSE)


def test_the_cache_key_is_the_model_and_the_exact_prompt() -> None:
    prompt = pairwise_prompt(CONVERSATION, "a", "b")
    assert cache_key("judge", prompt) == cache_key("judge", [dict(m) for m in prompt])
    assert cache_key("judge", prompt) != cache_key("other", prompt)
    assert cache_key("judge", prompt) != cache_key("judge", pairwise_prompt(CONVERSATION, "b", "a"))
