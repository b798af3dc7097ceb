"""Offline routing datasets: per prompt, whether the weak and the strong model answered correctly.

- ``routellm-mmlu``: ``<data_dir>/routellm/mmlu/mmlu_<subject>.csv``, columns ``prompt``,
  ``mistralai/Mixtral-8x7B-Instruct-v0.1`` (weak), ``gpt-4-1106-preview`` (strong); 14,042 prompts.
- ``routellm-gsm8k``: ``<data_dir>/routellm/gsm8k/gsm8k_responses.csv``, the same three columns plus
  both models' responses; 1,319 prompts.
- any other CSV with a ``prompt`` column and two boolean columns named by ``weak_column`` and
  ``strong_column`` (default ``weak_ok`` / ``strong_ok``), optionally a ``group`` column.
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WEAK_MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG_MODEL = "gpt-4-1106-preview"
NAMED_DATASETS = ("routellm-mmlu", "routellm-gsm8k")

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


class DatasetError(ValueError):
    """A dataset is missing or malformed; the message says which file and what is wrong."""


@dataclass(frozen=True)
class PairDataset:
    """Prompts with the weak and the strong model's correctness (booleans), plus a group per prompt."""

    name: str
    prompts: list[str]
    weak_ok: np.ndarray
    strong_ok: np.ndarray
    groups: list[str]

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if not (len(self.weak_ok) == len(self.strong_ok) == len(self.groups) == n):
            raise DatasetError(f"{self.name}: columns have different lengths")
        if n == 0:
            raise DatasetError(f"{self.name}: no rows")

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, index: np.ndarray) -> PairDataset:
        return PairDataset(
            self.name,
            [self.prompts[i] for i in index],
            self.weak_ok[index],
            self.strong_ok[index],
            [self.groups[i] for i in index],
        )


def _bool(value: str, where: str) -> bool:
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise DatasetError(f"{where}: expected a boolean, got {value!r}")


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    csv.field_size_limit(sys.maxsize)
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_pair_csv(
    path: Path,
    weak_column: str = "weak_ok",
    strong_column: str = "strong_ok",
    group: str | None = None,
    name: str | None = None,
) -> PairDataset:
    """Read one CSV of (prompt, weak correct, strong correct); ``group`` names every row if given."""
    rows = _read_rows(path)
    if not rows:
        raise DatasetError(f"{path}: no rows")
    missing = [c for c in ("prompt", weak_column, strong_column) if c not in rows[0]]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; has {sorted(rows[0])}")
    weak = np.array([_bool(r[weak_column], f"{path} row {i + 2}") for i, r in enumerate(rows)])
    strong = np.array([_bool(r[strong_column], f"{path} row {i + 2}") for i, r in enumerate(rows)])
    groups = [group if group is not None else r.get("group") or path.stem for r in rows]
    return PairDataset(name or path.stem, [r["prompt"] for r in rows], weak, strong, groups)


def _concat(name: str, parts: list[PairDataset]) -> PairDataset:
    return PairDataset(
        name,
        [p for part in parts for p in part.prompts],
        np.concatenate([part.weak_ok for part in parts]),
        np.concatenate([part.strong_ok for part in parts]),
        [g for part in parts for g in part.groups],
    )


def load_dataset(spec: str, data_dir: Path) -> PairDataset:
    """Load ``routellm-mmlu``, ``routellm-gsm8k`` (under ``data_dir``) or a CSV file path."""
    if spec == "routellm-mmlu":
        folder = data_dir / "routellm" / "mmlu"
        files = sorted(folder.glob("mmlu_*.csv"))
        if not files:
            raise DatasetError(f"{folder}: no mmlu_*.csv files (is --data-dir right?)")
        parts = [read_pair_csv(f, WEAK_MODEL, STRONG_MODEL, group=f.stem.removeprefix("mmlu_")) for f in files]
        return _concat(spec, parts)
    if spec == "routellm-gsm8k":
        path = data_dir / "routellm" / "gsm8k" / "gsm8k_responses.csv"
        return read_pair_csv(path, WEAK_MODEL, STRONG_MODEL, group="gsm8k", name=spec)
    path = Path(spec)
    if path.suffix.lower() != ".csv":
        raise DatasetError(f"unknown dataset {spec!r}: expected one of {list(NAMED_DATASETS)} or a .csv file")
    return read_pair_csv(path)
