"""Agreement functions: does the student's answer match the reference (the teacher's answer or gold)?

Each is ``(answer, reference) -> bool``. They label the pairs that :func:`router.calibration.calibrate`
certifies quality on, so they err on the strict side: an answer without a parsable value disagrees.

- ``exact``: equal after normalisation (Unicode NFKC, case, whitespace, surrounding punctuation).
- ``final_number``: the same final number; GSM8K's ``#### N`` marker wins, else the last number in the
  text ("$1,234.50" = 1234.5).
- ``label``: the same label: a choice letter (``A``, ``(b)``, ``Answer: C``) or a short class name.
- :func:`embedding_agreement`: cosine similarity of sentence embeddings >= a threshold.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

import numpy as np

from router.embedding import PromptEmbedder, default_embedder

Agreement = Callable[[str, str], bool]

_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = " \t\n.,;:!?\"'`()[]{}"
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?|-?\$?\.\d+")
_GSM8K_FINAL = re.compile(r"####\s*(.+)")
_LETTER = re.compile(r"^\(?([A-Za-z])\)?(?:[.):]|\s|$)")
_ANSWER_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\s*(?:is)?\s*[:\-]?\s*", re.IGNORECASE)


def normalize(text: str) -> str:
    """NFKC, lower case, single spaces, no surrounding punctuation."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _SPACE.sub(" ", text).strip(_EDGE_PUNCT)


def exact_match(answer: str, reference: str) -> bool:
    return normalize(answer) == normalize(reference)


def _to_decimal(token: str) -> Decimal | None:
    cleaned = token.replace("$", "").replace(",", "")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def final_number(text: str) -> Decimal | None:
    """The answer's final number: after GSM8K's ``####`` if present, else the last number in the text."""
    marked = _GSM8K_FINAL.search(text)
    scope = marked.group(1) if marked else text
    numbers = _NUMBER.findall(scope)
    if not numbers:
        return None
    return _to_decimal(numbers[0] if marked else numbers[-1])


def final_number_match(answer: str, reference: str) -> bool:
    a, b = final_number(answer), final_number(reference)
    return a is not None and b is not None and a == b


def extract_label(text: str) -> str | None:
    """A choice letter if the answer starts with one (after an optional "Answer:"), else the text."""
    body = _ANSWER_PREFIX.sub("", unicodedata.normalize("NFKC", text).strip())
    letter = _LETTER.match(body)
    if letter:
        return letter.group(1).upper()
    label = normalize(body)
    return label or None


def label_match(answer: str, reference: str) -> bool:
    a, b = extract_label(answer), extract_label(reference)
    return a is not None and a == b


def embedding_agreement(threshold: float = 0.9, embedder: PromptEmbedder | None = None) -> Agreement:
    """Agreement when the cosine similarity of the two texts' embeddings is at least ``threshold``."""
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")

    def agree(answer: str, reference: str) -> bool:
        model = embedder or default_embedder()
        vectors = model.embed([answer, reference])
        return bool(float(np.dot(vectors[0], vectors[1])) >= threshold)

    return agree


AGREEMENTS: dict[str, Agreement] = {
    "exact": exact_match,
    "final_number": final_number_match,
    "label": label_match,
}


def get_agreement(name: str, embedding_threshold: float = 0.9) -> Agreement:
    """An agreement function by name: one of :data:`AGREEMENTS` or ``embedding``."""
    if name == "embedding":
        return embedding_agreement(embedding_threshold)
    try:
        return AGREEMENTS[name]
    except KeyError:
        raise ValueError(f"unknown agreement {name!r}; expected one of {[*AGREEMENTS, 'embedding']}") from None
