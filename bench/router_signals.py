"""Router: time to turn an answer's OpenAI logprobs into features, and to score them.

Writes bench/results/router_signals.json. Usage:
    .venv/bin/python -m bench.router_signals [--tokens 16 64 256] [--top-k 5] [--repeats 2000]

Per answer length: parsing ``choices[0].logprobs.content`` into arrays (``TokenLogprobs.from_openai``),
computing the features, and the features plus a fitted logistic-regression post-hoc router's score. The
median over ``--repeats`` calls of ``time.perf_counter_ns`` is reported in microseconds.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cascade.logprobs import TokenLogprobs
from router.policy import RouteInput
from router.scorers import train_router
from router.signals import FEATURE_NAMES, feature_matrix, features

RESULTS = Path(__file__).resolve().parent / "results" / "router_signals.json"


def content(n: int, k: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        logits = rng.normal(0, 2, k)
        lp = logits - math.log(float(np.exp(logits).sum()) + 1.0)
        lp.sort()
        lp = lp[::-1]
        out.append(
            {
                "token": f"t{i}",
                "logprob": float(lp[0]),
                "top_logprobs": [{"token": f"a{j}", "logprob": float(v)} for j, v in enumerate(lp)],
            }
        )
    return out


def median_us(fn: Callable[[], object], repeats: int) -> float:
    for _ in range(min(100, repeats)):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    train = [TokenLogprobs.from_openai(content(int(rng.integers(4, 64)), args.top_k, rng)) for _ in range(300)]
    x = feature_matrix(train)
    labels = x[:, FEATURE_NAMES.index("prob_q10")] > np.median(x[:, FEATURE_NAMES.index("prob_q10")])
    router = train_router(x, labels, kind="post_hoc", feature_names=FEATURE_NAMES)

    rows = []
    for n in args.tokens:
        raw = content(n, args.top_k, rng)
        parsed = TokenLogprobs.from_openai(raw)
        sample = RouteInput(answer=parsed)
        rows.append(
            {
                "tokens": n,
                "top_k": args.top_k,
                "parse_us": median_us(lambda raw=raw: TokenLogprobs.from_openai(raw), args.repeats),
                "features_us": median_us(lambda parsed=parsed: features(parsed), args.repeats),
                "features_and_score_us": median_us(lambda s=sample: router.score(s), args.repeats),
            }
        )
        print(json.dumps(rows[-1]))
    result = {
        "benchmark": "router_signals",
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()},
        "numpy": np.__version__,
        "repeats": args.repeats,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
