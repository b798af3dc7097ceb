"""Run a task's prompts through the real student and teacher and record everything a router can use.

Each tier is called directly on its OpenAI-compatible endpoint (vLLM) with greedy decoding and
``logprobs`` with ``top_logprobs``: the same request the gateway sends. One JSON line per item goes to the
recording as soon as both answers are in, so an interrupted run resumes where it stopped (items already
recorded are skipped). A recording line::

    {"id", "task", "messages", "gold",
     "student": {"model", "text", "logprobs", "top_logprobs", "prompt_tokens", "completion_tokens",
                 "latency_s", "finish_reason"},
     "teacher": {... the same ...}}

The analysis of a recording is :func:`router.recorded.analyse`; it needs no network.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cascade.config import UpstreamSettings
from evaluation.tasks import Item, Task


class CollectError(RuntimeError):
    """A tier failed or answered something that is not an OpenAI chat completion; the message says which."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One tier: its base URL (``.../v1``), served model name and optional bearer key."""

    name: str
    url: str
    model: str
    api_key: str | None = None

    @classmethod
    def of(cls, name: str, upstream: UpstreamSettings) -> Endpoint:
        """The configured tier (``student`` or ``teacher`` settings)."""
        return cls(name, upstream.url, upstream.model, upstream.api_key)


def _answer(body: dict[str, Any], latency_s: float) -> dict[str, Any]:
    choice = body["choices"][0]
    content = (choice.get("logprobs") or {}).get("content") or []
    usage = body.get("usage") or {}
    return {
        "model": body.get("model"),
        "text": choice["message"].get("content") or "",
        "tool_calls": choice["message"].get("tool_calls"),
        "logprobs": [float(item["logprob"]) for item in content],
        "tokens": [str(item.get("token", "")) for item in content],  # for decision-token confidence
        "top_logprobs": [[float(alt["logprob"]) for alt in item.get("top_logprobs") or ()] for item in content],
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "latency_s": round(latency_s, 4),
        "finish_reason": choice.get("finish_reason"),
    }


async def ask(
    client: httpx.AsyncClient, endpoint: Endpoint, item: Item, max_tokens: int, top_logprobs: int
) -> dict[str, Any]:
    """One greedy chat completion with logprobs; raises :class:`CollectError` on any failure."""
    body = {
        "model": endpoint.model,
        "messages": item.messages,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "logprobs": True,
        "top_logprobs": top_logprobs,
    }
    if item.tools:
        body["tools"], body["tool_choice"] = item.tools, item.tool_choice
    headers = {"authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    started = time.perf_counter()
    try:
        response = await client.post(f"{endpoint.url.rstrip('/')}/chat/completions", json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise CollectError(f"{endpoint.name} at {endpoint.url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise CollectError(f"{endpoint.name} answered {response.status_code} for {item.id}: {response.text[:300]}")
    try:
        return _answer(response.json(), time.perf_counter() - started)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise CollectError(f"{endpoint.name}: not a chat completion for {item.id}: {exc!r}") from exc


def recorded_ids(path: Path, task: Task) -> set[str]:
    """The ids of ``task``'s items already in a recording; refuses a recording of another task, or of the
    same task with other options (an item whose recorded prompt is not the task's)."""
    if not path.exists():
        return set()
    prompts = {item.id: item.messages for item in task.items}
    ids = set()
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise CollectError(f"{path}:{number}: not JSON; remove the line or the file") from None
            if row.get("task") != task.name:
                raise CollectError(
                    f"{path} records task {row.get('task')!r}, not {task.name!r}; use another --recording"
                )
            if row["id"] in prompts and row.get("messages") != prompts[row["id"]]:
                raise CollectError(
                    f"{path}:{number}: item {row['id']} was recorded with another prompt (other task options); "
                    "use another --recording"
                )
            ids.add(row["id"])
    return ids


async def collect(
    task: Task,
    student: Endpoint,
    teacher: Endpoint,
    recording: Path,
    *,
    concurrency: int = 4,
    top_logprobs: int = 5,
    timeout_s: float = 600.0,
    progress: Callable[[str], None] | None = None,
    teacher_answers: Mapping[str, dict[str, Any]] | None = None,
) -> int:
    """Answer every item of ``task`` not yet in ``recording`` with both tiers; return how many were added.

    ``teacher_answers`` (see :func:`tier_answers`) stand in for asking the teacher again: a new student is
    compared with the same greedy teacher on the same prompts without paying for the teacher twice."""
    done = recorded_ids(recording, task)
    todo = [item for item in task.items if item.id not in done]
    recording.parent.mkdir(parents=True, exist_ok=True)
    gate = asyncio.Semaphore(concurrency)
    added = 0
    started = time.monotonic()
    limits = httpx.Limits(max_connections=2 * concurrency)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:

        async def one(item: Item) -> dict[str, Any]:
            async with gate:
                if teacher_answers is not None and item.id in teacher_answers:
                    s, t = await ask(client, student, item, task.max_tokens, top_logprobs), teacher_answers[item.id]
                else:
                    s, t = await asyncio.gather(
                        ask(client, student, item, task.max_tokens, top_logprobs),
                        ask(client, teacher, item, task.max_tokens, top_logprobs),
                    )
            return {
                "id": item.id,
                "task": task.name,
                "messages": item.messages,
                "gold": item.gold,
                "student": s,
                "teacher": t,
            }

        pending = [asyncio.ensure_future(one(item)) for item in todo]
        try:
            with recording.open("a", encoding="utf-8") as out:
                for future in asyncio.as_completed(pending):
                    out.write(json.dumps(await future) + "\n")
                    out.flush()
                    added += 1
                    if progress and (added % 10 == 0 or added == len(todo)):
                        rate = added / max(time.monotonic() - started, 1e-9) * 60
                        progress(f"{task.name}: {len(done) + added}/{len(task.items)} recorded ({rate:.1f} items/min)")
        finally:  # on a failure, stop the other requests; what is recorded stays for a resumed run
            for future in pending:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    return added


def tier_answers(path: Path, task: Task, tier: str) -> dict[str, dict[str, Any]]:
    """One tier's recorded answers to ``task``'s items, by id (checked like a resumed recording)."""
    recorded_ids(path, task)
    wanted = {item.id for item in task.items}
    return {row["id"]: row[tier] for row in read_recording(path) if row["id"] in wanted}


def read_recording(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise CollectError(f"{path}: no such recording")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
