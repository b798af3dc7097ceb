"""The judge model's calls: the prompts and verdicts of :mod:`router.judge` sent to any OpenAI-compatible
endpoint (default: the teacher tier), each reply cached by content hash (:func:`router.judge.cache_key`) in a
JSONL file, so a rerun of a benchmark or an evaluation pays for no judgement twice.

Greedy decoding, a short ``max_tokens`` (the verdict comes last, but the prompts ask for the verdict tag, and a
judge that rambles past the limit gets ``failed``, never a pass). A call that fails (HTTP error, no choices)
is the ``failed`` outcome too, with the error kept, and is not cached.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from evaluation.collect import Endpoint
from router.judge import Messages, Outcome, Verdict, cache_key, combine, pairwise_prompt, parse_verdict


@dataclass
class Usage:
    calls: int = 0  # calls made (cache hits are free)
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: int = 0


@dataclass(frozen=True)
class PairJudgement:
    """Both orders of one pair: the student's answer as A, then as B."""

    outcome: Outcome
    verdicts: tuple[Verdict, Verdict]
    replies: tuple[str | None, str | None]
    errors: tuple[str | None, str | None] = (None, None)


@dataclass
class Judge:
    endpoint: Endpoint
    cache_path: Path | None = None
    max_tokens: int = 512
    brief: bool = False  # ask for the verdict tag alone (router.judge.pairwise_prompt)
    timeout_s: float = 600.0
    usage: Usage = field(default_factory=Usage)
    _cache: dict[str, str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.cache_path is not None and self.cache_path.exists():
            for line in self.cache_path.read_text().splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self._cache[entry["key"]] = entry["reply"]

    async def reply(self, client: httpx.AsyncClient, prompt: Messages) -> tuple[str | None, str | None]:
        """(the judge's reply text, None) or (None, the error); cached replies cost nothing."""
        key = cache_key(f"{self.endpoint.model} max_tokens={self.max_tokens}", prompt)
        if key in self._cache:
            self.usage.cached += 1
            return self._cache[key], None
        body: dict[str, Any] = {
            "model": self.endpoint.model,
            "messages": prompt,
            "temperature": 0.0,
            "max_tokens": self.max_tokens,
        }
        headers = {"Authorization": f"Bearer {self.endpoint.api_key}"} if self.endpoint.api_key else {}
        self.usage.calls += 1
        try:
            response = await client.post(
                f"{self.endpoint.url}/chat/completions", json=body, headers=headers, timeout=self.timeout_s
            )
            response.raise_for_status()
            answer = response.json()
            text = answer["choices"][0]["message"].get("content") or ""
        except (httpx.HTTPError, KeyError, IndexError, TypeError, ValueError) as exc:
            self.usage.failures += 1
            return None, f"{type(exc).__name__}: {exc}"
        usage = answer.get("usage") or {}
        self.usage.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.usage.completion_tokens += int(usage.get("completion_tokens") or 0)
        if not text or answer["choices"][0].get("finish_reason") == "length":
            return text, None  # an empty or cut-off reply: used, never cached (a larger max_tokens may do better)
        self._cache[key] = text
        if self.cache_path is not None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            with self.cache_path.open("a") as cache:
                cache.write(json.dumps({"key": key, "reply": text}, ensure_ascii=False) + "\n")
        return text, None

    async def pair(
        self,
        client: httpx.AsyncClient,
        messages: Messages,
        student: str,
        teacher: str,
        reference: str | None = None,
    ) -> PairJudgement:
        """Is the student's answer at least as good as the teacher's? Asked in both orders."""
        first, second = await asyncio.gather(
            self.reply(client, pairwise_prompt(messages, student, teacher, reference, self.brief)),
            self.reply(client, pairwise_prompt(messages, teacher, student, reference, self.brief)),
        )
        verdicts = (parse_verdict(first[0]), parse_verdict(second[0]))
        return PairJudgement(combine(*verdicts), verdicts, (first[0], second[0]), (first[1], second[1]))
