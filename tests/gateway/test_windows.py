"""The limiter's windows in process, at fixed instants: the minute of rpm/tpm, the day or month of a budget."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.limits import windows
from logstore.keys import ApiKey


def at(*moment: int) -> float:
    return datetime(*moment, tzinfo=UTC).timestamp()


def test_the_minute_window_and_what_is_left_of_it() -> None:
    key = ApiKey("k", "team", "0" * 64)
    w = windows(key, at(2026, 12, 3, 10, 15, 45))
    assert w.minute == str(int(at(2026, 12, 3, 10, 15) // 60)) and w.minute_left_s == pytest.approx(15)
    assert windows(key, at(2026, 12, 3, 10, 16)).minute != w.minute  # a new minute, a new counter


def test_a_daily_budget_resets_at_midnight_utc() -> None:
    w = windows(ApiKey("k", "team", "0" * 64, budget_period="day"), at(2026, 12, 3, 23, 0))
    assert w.period == "20261203" and w.period_left_s == pytest.approx(3600)


def test_a_monthly_budget_rolls_over_the_year_end() -> None:
    key = ApiKey("k", "team", "0" * 64, budget_period="month")
    december = windows(key, at(2026, 12, 31, 12, 0))
    assert december.period == "202612" and december.period_left_s == pytest.approx(12 * 3600)
    assert windows(key, at(2027, 1, 1)).period == "202701"
    assert windows(key, at(2026, 11, 15)).period_left_s == pytest.approx(at(2026, 12, 1) - at(2026, 11, 15))
