"""Read labelled (score, student agreed) pairs for calibration from a JSONL or CSV file.

Each record has a score column and either a boolean label column, or an answer column and a reference
column that an agreement function (:mod:`router.agreement`) turns into the label.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from router.agreement import Agreement

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


class LabelledFileError(ValueError):
    """The file cannot be read as labelled pairs; the message names the file, line and problem."""


@dataclass(frozen=True)
class LabelledPairs:
    scores: np.ndarray
    student_ok: np.ndarray


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise LabelledFileError(f"{path}: no such file")
    if path.suffix.lower() == ".csv":
        csv.field_size_limit(sys.maxsize)
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LabelledFileError(f"{path}:{number}: not JSON: {exc.msg}") from None
            if not isinstance(record, dict):
                raise LabelledFileError(f"{path}:{number}: expected a JSON object")
            records.append(record)
    return records


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise LabelledFileError(f"{where}: expected a boolean label, got {value!r}")


def _as_score(value: Any, where: str) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise LabelledFileError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(score):
        raise LabelledFileError(f"{where}: score {value!r} is not finite")
    return score


def read_labelled(
    path: Path,
    score_column: str = "score",
    label_column: str = "student_ok",
    agreement: Agreement | None = None,
    answer_column: str = "student_answer",
    reference_column: str = "reference",
) -> LabelledPairs:
    """Scores and labels from ``path`` (``.csv``, else JSON lines). With ``agreement`` the label is
    ``agreement(record[answer_column], record[reference_column])`` instead of ``record[label_column]``."""
    records = _records(path)
    if not records:
        raise LabelledFileError(f"{path}: no records")
    scores = np.empty(len(records))
    ok = np.empty(len(records), dtype=bool)
    needed = [score_column, *((answer_column, reference_column) if agreement else (label_column,))]
    for i, record in enumerate(records):
        where = f"{path} record {i + 1}"
        missing = [c for c in needed if c not in record or record[c] is None]
        if missing:
            raise LabelledFileError(f"{where}: missing {missing}")
        scores[i] = _as_score(record[score_column], where)
        if agreement is not None:
            ok[i] = agreement(str(record[answer_column]), str(record[reference_column]))
        else:
            ok[i] = _as_bool(record[label_column], where)
    return LabelledPairs(scores, ok)
