"""A narrow task the tiny student can learn in a few steps, logged as real escalation records.

Banking-style intents: each prompt carries one keyword among filler words, the teacher answers the intent's
label. The teacher's answers carry per-token top-k logprobs with token ids (as vLLM's
``return_tokens_as_token_ids`` logs them), built from the shared tiny tokenizer.
"""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np

from cascade.config import LogStoreSettings, Settings, load_settings
from logstore import LogRecord, LogWriter, TierAnswer, TokenLogprobs

INTENTS = {"card": "freeze", "balance": "balance", "transfer": "transfer", "address": "profile"}
FILLER = ["please", "today", "now", "quickly", "my", "the", "again", "help", "bank", "account", "hello", "thanks"]
SYSTEM = {"role": "system", "content": "Answer with the intent label only."}
DAY = datetime(2026, 11, 30, tzinfo=UTC)


def prompt(rng: random.Random) -> tuple[list[dict[str, str]], str]:
    keyword = rng.choice(sorted(INTENTS))
    words = rng.sample(FILLER, 4)
    words.insert(rng.randrange(5), keyword)
    return [SYSTEM, {"role": "user", "content": " ".join(words) + f" {rng.randrange(1000)}"}], INTENTS[keyword]


def teacher_logprobs(tokenizer: Any, text: str, rng: random.Random, k: int = 3) -> TokenLogprobs:
    """Logged like vLLM with token ids: the chosen token first at p=0.9, then k-1 other ids."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    top = np.full((len(ids), k), np.nan, dtype=np.float32)
    top_tokens: list[list[str | int]] = []
    for i, tid in enumerate(ids):
        others = rng.sample([v for v in range(3, len(tokenizer)) if v != tid], k - 1)
        top[i] = np.log([0.9, 0.06, 0.02][:k])
        top_tokens.append([f"token_id:{t}" for t in [tid, *others]])
    tokens: list[str | int] = [f"token_id:{t}" for t in ids]
    return TokenLogprobs(top[:, 0], top, tokens, top_tokens)


def make_records(
    tokenizer: Any, n_escalated: int, n_accepted: int, seed: int = 0, start: datetime = DAY, wrong: bool = False
) -> list[LogRecord]:
    """Escalations (teacher = the intent label, with token-id logprobs) and accepted student answers."""
    rng = random.Random(seed)
    records = []
    for i in range(n_escalated + n_accepted):
        messages, label = prompt(rng)
        answer = "nothing" if wrong else label
        escalated = i < n_escalated
        student = TierAnswer("tiny-student", "hmm", None, 20, 2, 0.01, "stop")
        records.append(
            LogRecord(
                request_id=f"req-{seed}-{i}",
                time=start + timedelta(seconds=i),
                decision="escalate" if escalated else "accept",
                reason="not_confident" if escalated else "confident",
                tier="teacher" if escalated else "student",
                messages=messages,
                params={"model": "cascade", "temperature": 0.0},
                signals={"mean_logprob": 0.2 if escalated else 0.9},
                student=student if escalated else TierAnswer("tiny-student", label, None, 20, 2, 0.01, "stop"),
                teacher=TierAnswer("tiny-teacher", answer, teacher_logprobs(tokenizer, answer, rng), 20, 2, 0.1, "stop")
                if escalated
                else None,
                http_status=200,
            )
        )
    return records


def write_records(url: str, folder: Path, records: list[LogRecord]) -> None:
    async def go() -> None:
        writer = LogWriter(
            LogStoreSettings(url=url, spool_dir=str(folder / "spool"), flush_interval_s=0.05, retention_days=None)
        )
        await writer.start()
        for record in records:
            writer.submit(record)
        await writer.close()

    asyncio.run(go())


def regression_set(path: Path, n: int = 12, seed: int = 99) -> Path:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        messages, label = prompt(rng)
        lines.append(json.dumps({"messages": messages, "reference": label}))
    path.write_text("\n".join(lines) + "\n")
    return path


def distill_settings(
    tmp: Path,
    base_model: Path,
    student_url: str = "http://127.0.0.1:9/v1",
    student_api_key: str | None = None,
    **distill: Any,
) -> Settings:
    values: dict[str, Any] = {
        "base_model": str(base_model),
        "work_dir": str(tmp / "distill"),
        "registry_dir": str(tmp / "registry"),
        "steps": 40,
        "batch_size": 8,
        "lr": 1e-2,
        "lora_rank": 8,
        "lora_alpha": 16,
        "warmup_steps": 2,
        "checkpoint_every": 10,
        "min_examples": 20,
        "eval_fraction": 0.2,
        "eval_max_new_tokens": 6,
        "eval_batch_size": 16,
        "target_quality": 0.9,
        "hot_swap": False,
        **distill,
    }
    return load_settings(
        None,
        student={"url": student_url, "model": "tiny-student", "api_key": student_api_key},
        teacher={"url": "http://127.0.0.1:9/v1", "model": "tiny-teacher"},
        router={"signal": "mean_prob", "threshold": 0.5},
        log_store={"url": f"sqlite+aiosqlite:///{tmp}/cascade.db", "spool_dir": str(tmp / "spool")},
        distill=values,
    )


class Figures(HTMLParser):
    """Collects each ``data-figure`` element's text and every image source."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, str] = {}
        self.images: list[str] = []
        self.external: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if attributes.get("data-figure"):
            self._open = attributes["data-figure"]
            self.figures[self._open] = ""
        if tag == "img":
            self.images.append(attributes.get("src") or "")
        for name in ("src", "href"):
            value = attributes.get(name) or ""
            if value.startswith(("http:", "https:", "//")):
                self.external.append(value)

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.figures[self._open] += data


def figures_of(run_dir: Path) -> Figures:
    parser = Figures()
    parser.feed((run_dir / "report.html").read_text())
    return parser


def value_at(report: dict[str, Any], path: str) -> Any:
    value: Any = report
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def shown(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def assert_html_matches_json(run_dir: Path) -> Figures:
    """Every figure the HTML shows is the JSON report's value at the path it names; the key ones are shown."""
    report = json.loads((run_dir / "report.json").read_text())
    page = figures_of(run_dir)
    for path, text in page.figures.items():
        assert text.strip() == shown(value_at(report, path)), path
    for required in ("decision", "metrics.heldout_candidate.agreement", "metrics.heldout_serving.escalation_rate"):
        assert required in page.figures
    assert page.external == []  # readable offline
    return page
