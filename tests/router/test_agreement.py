"""Agreement functions on hand-written answer/reference pairs."""

from __future__ import annotations

from decimal import Decimal

import pytest

from router.agreement import (
    exact_match,
    extract_label,
    final_number,
    final_number_match,
    get_agreement,
    label_match,
)


@pytest.mark.parametrize(
    ("answer", "reference", "agree"),
    [
        ("Paris.", "paris", True),
        ("  The   Eiffel Tower ", "the eiffel tower", True),
        ("\uff30\uff21\uff32\uff29\uff33", "Paris", True),  # full-width letters normalise (NFKC)
        ("Paris, France", "Paris", False),
    ],
)
def test_exact_match(answer: str, reference: str, agree: bool) -> None:
    assert exact_match(answer, reference) is agree


def test_final_number_prefers_the_gsm8k_marker() -> None:
    assert final_number("She has 16 - 3 = 13 eggs, sells 9 * $2 = $18.\n#### 18") == Decimal(18)
    assert final_number("The total is $1,234.50 after 3 weeks") == Decimal("3")
    assert final_number("#### $1,234.50") == Decimal("1234.50")
    assert final_number("no digits here") is None


@pytest.mark.parametrize(
    ("answer", "reference", "agree"),
    [
        ("So she makes 9 * 2 = 18 dollars.", "#### 18", True),
        ("#### 18.0", "#### 18", True),
        ("The answer is 17", "#### 18", False),
        ("I cannot tell", "#### 18", False),  # nothing parsable disagrees
        ("-5 degrees", "#### -5", True),
    ],
)
def test_final_number_match(answer: str, reference: str, agree: bool) -> None:
    assert final_number_match(answer, reference) is agree


@pytest.mark.parametrize(
    ("text", "label"),
    [("B", "B"), ("(c) because ...", "C"), ("Answer: d. Dolphins", "D"), ("card_arrival", "card_arrival")],
)
def test_extract_label(text: str, label: str) -> None:
    assert extract_label(text) == label


def test_label_match() -> None:
    assert label_match("The answer is B.", "B")
    assert not label_match("A", "B")
    assert label_match("Card_Arrival", "card_arrival")
    assert not label_match("", "")


def test_registry() -> None:
    assert get_agreement("final_number") is final_number_match
    with pytest.raises(ValueError, match="unknown agreement"):
        get_agreement("vibes")
