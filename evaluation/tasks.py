"""Labelled tasks for live evaluation: each item is a chat prompt with its gold answer.

- ``banking77``: classify a customer's banking message into one of a few intents (the label is the
  answer; judged with :func:`router.agreement.label_match`). Short answers: cheap on a CPU.
- ``gsm8k``: grade-school maths, answer ending in ``#### N`` (judged with
  :func:`router.agreement.final_number_match`). Long answers: minutes per item on a CPU.
- ``bfcl``: the Berkeley Function Calling Leaderboard's simple, multiple, parallel and irrelevance questions,
  asked with their tools (``tool_choice: auto``) and judged by BFCL's AST rules (:mod:`evaluation.bfcl`).

Items are the first ``limit`` of the test split shuffled with ``seed``: the same items every time, and a
larger limit only adds items (a recording made with a smaller one is reused).
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluation.bfcl import BFCL_CATEGORIES, bfcl_match, calls_text, sample
from router.agreement import Agreement, final_number_match, label_match

TASK_NAMES: tuple[str, ...] = ("banking77", "gsm8k", "bfcl")

# A fixed, varied subset of Banking77's 77 intents (the first `intents` are used).
BANKING77_INTENTS: tuple[str, ...] = (
    "card_arrival",
    "lost_or_stolen_card",
    "exchange_rate",
    "automatic_top_up",
    "pending_cash_withdrawal",
    "change_pin",
    "age_limit",
    "apple_pay_or_google_pay",
    "terminate_account",
    "country_support",
    "cancel_transfer",
    "transaction_charged_twice",
    "request_refund",
    "get_physical_card",
    "atm_support",
)

GSM8K_SYSTEM = (
    "Solve the maths problem step by step, briefly. End with a line '#### <answer>' holding only the final number."
)


class TaskError(ValueError):
    """The task cannot be built (unknown name, missing data folder, bad option)."""


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    messages: list[dict[str, str]]
    gold: str
    tools: list[dict[str, Any]] | None = None  # offered with ``tool_choice``
    tool_choice: str = "auto"


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    items: list[Item]
    max_tokens: int
    agreement_name: str
    options: dict[str, Any]

    @property
    def agreement(self) -> Agreement:
        return {"final_number": final_number_match, "bfcl": bfcl_match}.get(self.agreement_name, label_match)

    def judged(self, answer: dict[str, Any]) -> str:
        """What the agreement reads of a recorded answer: its tool calls on a tool-calling task, else its text."""
        return calls_text(answer.get("tool_calls")) if self.agreement_name == "bfcl" else answer["text"]


def banking77_messages(query: str, intents: tuple[str, ...] | list[str]) -> list[dict[str, str]]:
    """The classification prompt: a system line listing the allowed labels, then the customer's message."""
    system = "Classify the customer's banking message. Reply with exactly one label from: " + ", ".join(intents) + "."
    return [{"role": "system", "content": system}, {"role": "user", "content": query}]


def read_banking77(path: Path, intents: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """(text, intent) rows of a Banking77 split, restricted to ``intents``."""
    with path.open(newline="", encoding="utf-8") as handle:
        return [(row["text"], row["category"]) for row in csv.DictReader(handle) if row["category"] in intents]


def _require(path: Path) -> Path:
    if not path.is_file():
        raise TaskError(f"{path}: no such file; pass --data-dir pointing at the shared data folder")
    return path


def load_task(
    name: str, data_dir: Path, limit: int | None = None, seed: int = 0, intents: int = 10, tool_choice: str = "auto"
) -> Task:
    """The task ``name`` over a seeded sample of at most ``limit`` test items. ``tool_choice`` (bfcl): ``auto``
    asks every category; ``required`` (the model must call a tool, which vLLM enforces by guided decoding) asks
    only the categories whose answer is a call, not ``irrelevance``."""
    if limit is not None and limit < 1:
        raise TaskError(f"limit must be at least 1, got {limit}")
    if tool_choice not in ("auto", "required") or (tool_choice != "auto" and name != "bfcl"):
        raise TaskError(f"tool_choice {tool_choice!r}: expected auto, or required with the bfcl task")
    rng = random.Random(seed)
    if name == "banking77":
        if not 2 <= intents <= len(BANKING77_INTENTS):
            raise TaskError(f"intents must be between 2 and {len(BANKING77_INTENTS)}, got {intents}")
        labels = BANKING77_INTENTS[:intents]
        rows = read_banking77(_require(data_dir / "banking77" / "test.csv"), labels)
        rng.shuffle(rows)
        picked = rows[: limit or len(rows)]
        items = [
            Item(f"banking77-{i}", banking77_messages(text, labels), gold) for i, (text, gold) in enumerate(picked)
        ]
        return Task(name, items, 12, "label", {"intents": list(labels), "seed": seed})
    if name == "gsm8k":
        with _require(data_dir / "gsm8k" / "test.jsonl").open(encoding="utf-8") as handle:
            problems = [json.loads(line) for line in handle if line.strip()]
        order = list(range(len(problems)))
        rng.shuffle(order)
        chosen = order[: limit or len(order)]
        items = [
            Item(
                f"gsm8k-{i}",
                [{"role": "system", "content": GSM8K_SYSTEM}, {"role": "user", "content": problems[i]["question"]}],
                problems[i]["answer"],
            )
            for i in chosen
        ]
        return Task(name, items, 320, "final_number", {"seed": seed})
    if name == "bfcl":
        categories = [c for c in BFCL_CATEGORIES if tool_choice == "auto" or c != "irrelevance"]
        try:
            questions = sample(data_dir, categories, limit, rng)
        except FileNotFoundError as exc:
            raise TaskError(str(exc)) from None
        items = [Item(id_, messages, gold, tools, tool_choice) for id_, messages, tools, gold in questions]
        options = {"seed": seed, "categories": categories, "tool_choice": tool_choice}
        return Task(name if tool_choice == "auto" else f"{name}_{tool_choice}", items, 256, "bfcl", options)
    raise TaskError(f"unknown task {name!r}; expected one of {list(TASK_NAMES)}")
