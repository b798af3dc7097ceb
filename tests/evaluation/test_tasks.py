"""Tasks are seeded samples of the shared datasets with gold answers the agreement functions can read."""

from __future__ import annotations

from pathlib import Path

import pytest

from evaluation.tasks import BANKING77_INTENTS, TaskError, load_task
from router.agreement import final_number

DATA = Path(__file__).resolve().parents[1] / "data"  # excerpts of the shared datasets (tests/data/README.md)


def test_banking77_is_a_seeded_sample_among_the_chosen_intents() -> None:
    task = load_task("banking77", DATA, limit=20, seed=3, intents=4)
    again = load_task("banking77", DATA, limit=20, seed=3, intents=4)
    assert [i.messages for i in task.items] == [i.messages for i in again.items]
    assert len(task.items) == 20 and len({i.id for i in task.items}) == 20
    assert {i.gold for i in task.items} <= set(BANKING77_INTENTS[:4])
    assert all(", ".join(BANKING77_INTENTS[:4]) in i.messages[0]["content"] for i in task.items)
    assert task.agreement("card_arrival.", "card_arrival") and not task.agreement("change_pin", "card_arrival")
    other = load_task("banking77", DATA, limit=20, seed=4, intents=4)
    assert [i.messages for i in other.items] != [i.messages for i in task.items]


def test_gsm8k_items_carry_a_final_number() -> None:
    task = load_task("gsm8k", DATA, limit=5)
    assert len(task.items) == 5 and task.agreement_name == "final_number"
    assert all(final_number(item.gold) is not None for item in task.items)
    assert task.agreement("so the answer is #### 18", "... #### 18")


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("mmlu", {}, "unknown task 'mmlu'"),
        ("banking77", {"limit": 0}, "limit must be at least 1"),
        ("banking77", {"intents": 1}, "intents must be between 2"),
    ],
)
def test_bad_task_options_are_one_clear_error(name: str, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(TaskError, match=message):
        load_task(name, DATA, **kwargs)


def test_a_missing_data_folder_says_which_file(tmp_path: Path) -> None:
    with pytest.raises(TaskError, match=r"banking77/test\.csv: no such file"):
        load_task("banking77", tmp_path)
