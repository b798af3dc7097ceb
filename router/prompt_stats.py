"""Cheap statistics of the prompt text, known before generation (complements the prompt embedding).

Longer prompts with more quantities are harder (a multi-step word problem, a long legal passage); the
embedding, normalised to unit length, does not carry length at all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

PROMPT_FEATURE_NAMES: tuple[str, ...] = ("prompt_log_chars", "prompt_log_words", "prompt_numbers", "prompt_lines")

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def prompt_features(text: str) -> dict[str, float]:
    return {
        "prompt_log_chars": math.log1p(len(text)),
        "prompt_log_words": math.log1p(len(text.split())),
        "prompt_numbers": float(len(_NUMBER.findall(text))),
        "prompt_lines": float(text.count("\n") + 1),
    }


def prompt_matrix(texts: Sequence[str], names: Sequence[str] = PROMPT_FEATURE_NAMES) -> np.ndarray:
    out = np.empty((len(texts), len(names)), dtype=np.float64)
    for i, text in enumerate(texts):
        row = prompt_features(text)
        out[i] = [row[name] for name in names]
    return out
