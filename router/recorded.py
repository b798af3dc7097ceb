"""Live evaluation: how every router does on answers the real student and teacher gave to a labelled task.

Input: recorded rows (see :mod:`evaluation.collect`): the prompt, the gold answer, and both tiers' answers
with the student's token logprobs. Because decoding is greedy, the cascade's answer at any threshold is
known from the recording: the student's when it is accepted, the teacher's when it is escalated. So one
recording gives the exact quality-vs-teacher-calls curve of every router:

- each post-generation signal of :mod:`router.signals` alone;
- the learned post-hoc scorer (logistic regression over all signals, optionally with the prompt
  embedding) and the pre-generation router (prompt embedding and statistics), each scored out of fold
  (k-fold cross-fitting), never on the rows it was trained on;
- the random router and the oracle (escalates exactly where only the teacher is right).

Quality is accuracy against the gold answers. For each router: the teacher-call share needed for 95% and
100% of the teacher's quality, the best quality any cut reaches and where, APGR, and the cost per 1,000
requests along the curve (a post-generation router pays the student on every request and the teacher on
escalations; a pre-generation router skips the student for what it escalates).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cascade.logprobs import TokenLogprobs
from router.agreement import Agreement
from router.metrics import Curve, apgr, cpt, oracle_strong_need, random_curve, routing_curve
from router.policy import accepts
from router.signals import FEATURE_NAMES, feature_matrix

if TYPE_CHECKING:
    from router.scorers import Kind

# signals where a larger value means a less trustworthy answer
LESS_SURE_WHEN_LARGER = frozenset({"mean_entropy", "length"})
QUALITY_TARGETS = (0.95, 1.0)
Price = Callable[[int, int], float]  # (prompt_tokens, completion_tokens) -> USD


@dataclass(frozen=True)
class LiveSet:
    """The recorded rows as arrays: labels, answer features, prompt texts and per-request costs."""

    ids: list[str]
    prompts: list[str]
    student_ok: np.ndarray
    teacher_ok: np.ndarray
    features: np.ndarray  # (n, len(FEATURE_NAMES))
    confidence: np.ndarray  # the serving default signal, mean_prob: exp(mean token logprob)
    student_cost: np.ndarray
    teacher_cost: np.ndarray
    student_tokens: np.ndarray  # (n, 2): prompt, completion
    teacher_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def _tokens(answer: dict[str, Any]) -> TokenLogprobs:
    rows = answer.get("top_logprobs") or []
    width = max((len(r) for r in rows), default=0)
    top = np.full((len(rows), width), np.nan)
    for i, row in enumerate(rows):
        top[i, : len(row)] = row
    return TokenLogprobs.from_arrays(answer["logprobs"], top if width else None)


def _prompt_text(messages: Sequence[dict[str, Any]]) -> str:
    users = [str(m.get("content") or "") for m in messages if m.get("role") == "user"]
    return users[-1] if users else ""


def live_set(
    rows: Sequence[dict[str, Any]], agreement: Agreement, student_price: Price, teacher_price: Price
) -> LiveSet:
    """Label the rows against gold with ``agreement`` and price both tiers' token counts."""
    if not rows:
        raise ValueError("the recording has no rows")
    answers = [_tokens(row["student"]) for row in rows]

    def usage(tier: str) -> np.ndarray:
        return np.array([[row[tier]["prompt_tokens"] or 0, row[tier]["completion_tokens"] or 0] for row in rows])

    s_tok, t_tok = usage("student"), usage("teacher")
    matrix = feature_matrix(answers)
    return LiveSet(
        ids=[row["id"] for row in rows],
        prompts=[_prompt_text(row["messages"]) for row in rows],
        student_ok=np.array([agreement(row["student"]["text"], row["gold"]) for row in rows]),
        teacher_ok=np.array([agreement(row["teacher"]["text"], row["gold"]) for row in rows]),
        features=matrix,
        confidence=matrix[:, FEATURE_NAMES.index("mean_prob")],
        student_cost=np.array([student_price(int(p), int(c)) for p, c in s_tok]),
        teacher_cost=np.array([teacher_price(int(p), int(c)) for p, c in t_tok]),
        student_tokens=s_tok,
        teacher_tokens=t_tok,
    )


def signal_need(data: LiveSet, name: str) -> np.ndarray:
    """How much an answer needs the teacher by one signal: larger = escalate first."""
    values = data.features[:, FEATURE_NAMES.index(name)]
    return values if name in LESS_SURE_WHEN_LARGER else -values


def _cross_fit(
    x: np.ndarray, y: np.ndarray, folds: int, seed: int, c: float, kind: Kind, names: Sequence[str]
) -> np.ndarray:
    from sklearn.model_selection import StratifiedKFold

    from router.scorers import train_router

    embedding_dim = x.shape[1] - len(names)
    scores = np.empty(len(y))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        model = train_router(
            x[train],
            y[train],
            kind=kind,
            feature_names=names,
            use_embedding=embedding_dim > 0,
            c=c,
            seed=seed,
            embedding_dim=embedding_dim,
        )
        scores[test] = model.score_matrix(x[test])
    return -scores  # need = -P(student right)


def learned_needs(
    data: LiveSet, embeddings: np.ndarray | None, folds: int = 5, seed: int = 0
) -> tuple[dict[str, np.ndarray], str | None]:
    """Out-of-fold needs of the learned routers, or a note on why they were skipped."""
    from router.prompt_stats import PROMPT_FEATURE_NAMES, prompt_matrix

    y = data.student_ok.astype(np.int64)
    smallest = int(min(y.sum(), len(y) - y.sum()))
    if smallest < folds:
        return {}, f"only {smallest} answers in the smaller class: too few for {folds}-fold learned routers"
    needs = {"post-hoc logreg (signals)": _cross_fit(data.features, y, folds, seed, 1.0, "post_hoc", FEATURE_NAMES)}
    if embeddings is not None:
        stats = prompt_matrix(data.prompts)
        post = np.hstack([data.features, embeddings])
        needs["post-hoc logreg (signals + prompt embedding)"] = _cross_fit(
            post, y, folds, seed, 0.05, "post_hoc", FEATURE_NAMES
        )
        pre = np.hstack([stats, embeddings])
        needs["pre-generation (prompt embedding)"] = _cross_fit(
            pre, y, folds, seed, 0.05, "pre_generation", PROMPT_FEATURE_NAMES
        )
    return needs, None


def share_for_quality(curve: Curve, target: float) -> float | None:
    """The smallest teacher-call share whose quality reaches ``target`` (None if no share does)."""
    if curve.weak_quality >= target:
        return 0.0
    if curve.strong_quality <= curve.weak_quality:
        return None
    share = cpt(curve, (target - curve.weak_quality) / (curve.strong_quality - curve.weak_quality))
    return None if np.isnan(share) else share


@dataclass(frozen=True)
class RouterResult:
    name: str
    curve: Curve
    cost: Curve  # "quality" here is the mean cost per request in USD at the same cuts

    def cost_per_1k_at(self, share: float) -> float:
        return 1000 * self.cost.quality_at(share)

    def summary(self, teacher_quality: float, teacher_only_cost_1k: float) -> dict[str, Any]:
        best = int(np.argmax(self.curve.quality))
        out: dict[str, Any] = {
            "apgr": apgr(self.curve) if self.curve.strong_quality > self.curve.weak_quality else None,
            "best_quality": float(self.curve.quality[best]),
            "best_quality_teacher_share": float(self.curve.share[best]),
        }
        for fraction in QUALITY_TARGETS:
            share = share_for_quality(self.curve, fraction * teacher_quality)
            cost = None if share is None else self.cost_per_1k_at(share)
            out[f"teacher_quality_{fraction:.0%}"] = {
                "teacher_share": share,
                "cost_per_1k_usd": cost,
                "cost_reduction_vs_teacher_only": None if not cost else teacher_only_cost_1k / cost,
            }
        return out


def evaluate_need(data: LiveSet, name: str, need: np.ndarray, pre_generation: bool = False) -> RouterResult:
    """The quality and cost curves of escalating in decreasing ``need``."""
    curve = routing_curve(need, data.student_ok, data.teacher_ok)
    escalated_cost = data.teacher_cost if pre_generation else data.student_cost + data.teacher_cost
    return RouterResult(name, curve, routing_curve(need, data.student_cost, escalated_cost))


def threshold_sweep(data: LiveSet, thresholds: Sequence[float]) -> list[dict[str, float]]:
    """The default serving router (``mean_prob``) at fixed thresholds: share, quality, cost."""
    points = []
    for threshold in thresholds:
        escalate = np.array([not accepts(float(c), threshold) for c in data.confidence], dtype=bool)
        answer_ok = np.where(escalate, data.teacher_ok, data.student_ok)
        cost = data.student_cost.sum() + data.teacher_cost[escalate].sum()
        points.append(
            {
                "threshold": float(threshold),
                "teacher_share": float(escalate.mean()),
                "quality": float(answer_ok.mean()),
                "cost_per_1k_usd": float(1000 * cost / len(data)),
            }
        )
    return points


def analyse(
    data: LiveSet,
    embeddings: np.ndarray | None = None,
    thresholds: Sequence[float] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98),
    folds: int = 5,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, RouterResult]]:
    """Every router's summary (JSON-ready) and its curves (for plots)."""
    teacher_quality = float(data.teacher_ok.mean())
    teacher_only_1k = float(1000 * data.teacher_cost.mean())
    results = {
        f"signal {name}": evaluate_need(data, f"signal {name}", signal_need(data, name)) for name in FEATURE_NAMES
    }
    learned, note = learned_needs(data, embeddings, folds, seed)
    for name, need in learned.items():
        results[name] = evaluate_need(data, name, need, pre_generation=name.startswith("pre-generation"))
    oracle = oracle_strong_need(data.student_ok, data.teacher_ok)
    results["oracle"] = evaluate_need(data, "oracle", oracle)
    random = random_curve(data.student_ok, data.teacher_ok)
    mean_s, mean_t = float(data.student_cost.mean()), float(data.teacher_cost.mean())
    results["random"] = RouterResult(
        "random", random, Curve(np.array([0.0, 1.0]), np.array([mean_s, mean_s + mean_t]), mean_s, mean_s + mean_t)
    )
    summary: dict[str, Any] = {
        "n": len(data),
        "student_quality": float(data.student_ok.mean()),
        "teacher_quality": teacher_quality,
        "oracle_quality": float(np.maximum(data.student_ok, data.teacher_ok).mean()),
        "student_only_cost_per_1k_usd": 1000 * mean_s,
        "teacher_only_cost_per_1k_usd": teacher_only_1k,
        "mean_tokens": {
            "student": dict(zip(("prompt", "completion"), data.student_tokens.mean(axis=0).tolist(), strict=True)),
            "teacher": dict(zip(("prompt", "completion"), data.teacher_tokens.mean(axis=0).tolist(), strict=True)),
        },
        "routers": {name: result.summary(teacher_quality, teacher_only_1k) for name, result in results.items()},
        "serving_threshold_sweep": threshold_sweep(data, thresholds),
        "learned_routers_note": note,
        "folds": folds,
        "seed": seed,
    }
    return summary, results
