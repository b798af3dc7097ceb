"""An answer's per-token log-probabilities: the one type the router's signals, the log store and the
distillation dataset share, built once from the OpenAI ``logprobs.content`` list when a tier's answer
arrives.

Storage form: float32 arrays, the alternatives NaN-padded where a position has fewer than k of them, and the
token strings (or ids) while they are not redacted; :meth:`TokenLogprobs.encode` packs it into one msgpack
blob. It depends on numpy and msgpack only, so every package can use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

Token = str | int
_BLOB_VERSION = 1


@dataclass(slots=True)
class TokenLogprobs:
    """The per-token log-probabilities of one answer: n positions, up to k alternatives at each.

    ``logprobs`` is float32 of shape (n,): the chosen token's logprob. ``top_logprobs`` is float32 of shape
    (n, k), NaN-padded where a position has fewer than k alternatives. ``tokens`` / ``top_tokens`` hold the
    token strings (as OpenAI-compatible servers return them) or ids; both are None once redacted.
    """

    logprobs: np.ndarray
    top_logprobs: np.ndarray
    tokens: list[Token] | None = None
    top_tokens: list[list[Token]] | None = None

    def __post_init__(self) -> None:
        self.logprobs = np.asarray(self.logprobs, dtype=np.float32).reshape(-1)
        n = self.logprobs.shape[0]
        top = np.asarray(self.top_logprobs, dtype=np.float32)
        self.top_logprobs = top.reshape(n, -1) if n else top.reshape(0, top.shape[-1] if top.ndim == 2 else 0)
        if self.tokens is not None and len(self.tokens) != n:
            raise ValueError(f"{len(self.tokens)} tokens for {n} logprobs")
        if self.top_tokens is not None and len(self.top_tokens) != n:
            raise ValueError(f"{len(self.top_tokens)} top-token lists for {n} logprobs")

    def __len__(self) -> int:
        return int(self.logprobs.shape[0])

    @property
    def approx_bytes(self) -> int:
        """About the memory it holds: the arrays, and ~64 bytes per token string (a small Python str and its
        list slot); top-20 token strings of a long answer run to 0.5-1 MB."""
        strings = (len(self.tokens) if self.tokens is not None else 0) + sum(map(len, self.top_tokens or ()))
        return int(self.logprobs.nbytes + self.top_logprobs.nbytes) + 64 * strings

    @property
    def k(self) -> int:
        return int(self.top_logprobs.shape[1])

    @classmethod
    def from_openai(cls, content: Sequence[Mapping[str, Any]] | None) -> TokenLogprobs:
        """Build from an OpenAI chat answer's ``choices[i].logprobs.content`` list (``None``: no tokens)."""
        content = content or []
        n = len(content)
        k = max((len(item.get("top_logprobs") or ()) for item in content), default=0)
        logprobs = np.empty(n, dtype=np.float32)
        top = np.full((n, k), np.nan, dtype=np.float32)
        tokens: list[Token] = []
        top_tokens: list[list[Token]] = []
        for i, item in enumerate(content):
            logprobs[i] = item["logprob"]
            tokens.append(item["token"])
            alternatives = item.get("top_logprobs") or []
            top_tokens.append([alt["token"] for alt in alternatives])
            for j, alt in enumerate(alternatives):
                top[i, j] = alt["logprob"]
        return cls(logprobs, top, tokens, top_tokens)

    @classmethod
    def from_arrays(
        cls, logprobs: Sequence[float] | np.ndarray, top: np.ndarray | None = None, tokens: Sequence[Token] = ()
    ) -> TokenLogprobs:
        """From plain numbers (``top`` NaN-padded, or None for no alternatives), with or without token text."""
        values = np.asarray(logprobs, dtype=np.float32).reshape(-1)
        alternatives = np.zeros((values.shape[0], 0), np.float32) if top is None else top
        return cls(values, alternatives, list(tokens) if tokens else None)

    def encode(self) -> bytes:
        """The compact storage form: one msgpack map with float32 bytes for the numbers."""
        return msgpack.packb(
            {
                "v": _BLOB_VERSION,
                "n": len(self),
                "k": self.k,
                "lp": self.logprobs.astype("<f4").tobytes(),
                "tlp": self.top_logprobs.astype("<f4").tobytes(),
                "t": self.tokens,
                "tt": self.top_tokens,
            },
            use_bin_type=True,
        )

    @classmethod
    def decode(cls, blob: bytes) -> TokenLogprobs:
        data = msgpack.unpackb(blob, raw=False)
        if data.get("v") != _BLOB_VERSION:
            raise ValueError(f"unknown token blob version {data.get('v')!r}")
        n, k = data["n"], data["k"]
        logprobs = np.frombuffer(data["lp"], dtype="<f4").astype(np.float32)
        top = np.frombuffer(data["tlp"], dtype="<f4").astype(np.float32).reshape(n, k)
        return cls(logprobs, top, data["t"], data["tt"])

    def select(self, mask: np.ndarray) -> TokenLogprobs:
        """The positions where ``mask`` (bool, one per token) is true, in order."""
        keep = np.flatnonzero(mask)
        return TokenLogprobs(
            self.logprobs[keep],
            self.top_logprobs[keep],
            [self.tokens[i] for i in keep] if self.tokens is not None else None,
            [self.top_tokens[i] for i in keep] if self.top_tokens is not None else None,
        )

    def redacted(self) -> TokenLogprobs:
        """The same numbers without any token text."""
        return TokenLogprobs(self.logprobs, self.top_logprobs, None, None)

    def to_export_dict(self) -> dict[str, Any]:
        """Plain lists; ``top_logprobs[i]`` holds only the alternatives given at position i (no padding)."""
        rows = []
        for i, row in enumerate(self.top_logprobs.tolist()):
            width = len(self.top_tokens[i]) if self.top_tokens is not None else _width(row)
            rows.append(row[:width])
        return {
            "tokens": self.tokens,
            "logprobs": self.logprobs.tolist(),
            "top_tokens": self.top_tokens,
            "top_logprobs": rows,
        }


def _width(row: list[float]) -> int:
    width = len(row)
    while width and math.isnan(row[width - 1]):
        width -= 1
    return width
