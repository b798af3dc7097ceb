"""Offline evaluation of the pre-generation router on weak/strong correctness data (RouteLLM's testbed).

Protocol: a stratified split of the dataset into train and held-out test prompts (``test_fraction``);
the router's variant (target, regularisation, prompt statistics) is chosen by k-fold cross-validated APGR
on the train part only; the chosen variant is refitted on the whole train part and scored once on the
test part. Reported on the test part: APGR (with a bootstrap interval), CPT(50%), CPT(80%), quality at
fixed strong-call shares, against random routing (APGR 0.5) and the oracle, plus a prompt-length-only
baseline. Results: a JSON file and a PNG plot of quality against strong-model calls.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from router.datasets import PairDataset, load_dataset
from router.embedding import MODEL_NAME, PromptEmbedder
from router.metrics import Curve, bootstrap_apgr, oracle_strong_need, random_curve, routing_curve, summarize
from router.prompt_stats import PROMPT_FEATURE_NAMES, prompt_matrix
from router.scorers import LearnedRouter, Target, train_router

ENCODERS = ("minilm", "tfidf")
SHARES = (0.1, 0.2, 0.3, 0.5, 0.8)


@dataclass(frozen=True)
class Variant:
    target: Target
    c: float
    prompt_stats: bool

    @property
    def label(self) -> str:
        stats = "+stats" if self.prompt_stats else ""
        return f"logreg[{self.target}, C={self.c}]{stats}"


VARIANTS: tuple[Variant, ...] = tuple(
    Variant(target, c, stats) for target in ("gain", "student_ok") for c in (0.003, 0.01) for stats in (True, False)
)


def _labels(ds: PairDataset, target: Target) -> np.ndarray:
    if target == "gain":
        return ds.strong_ok.astype(np.int64) - ds.weak_ok.astype(np.int64)
    return ds.weak_ok.astype(np.int64)


def _strata(ds: PairDataset) -> np.ndarray:
    return ds.weak_ok.astype(np.int64) * 2 + ds.strong_ok.astype(np.int64)


class TfidfEncoder:
    """A model-free baseline encoder: TF-IDF word n-grams reduced to <= 256 dimensions, fitted on train."""

    def __init__(self, seed: int = 0):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.seed = seed
        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=50_000, sublinear_tf=True)
        self.svd: Any = None

    def fit_transform(self, texts: list[str]) -> np.ndarray:
        from sklearn.decomposition import TruncatedSVD

        sparse = self.vectorizer.fit_transform(texts)
        self.svd = TruncatedSVD(min(256, sparse.shape[1] - 1), random_state=self.seed)
        return np.asarray(self.svd.fit_transform(sparse))

    def transform(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.svd.transform(self.vectorizer.transform(texts)))


def _design(encoded: np.ndarray, stats: np.ndarray, variant: Variant) -> np.ndarray:
    return np.hstack([stats, encoded]) if variant.prompt_stats else encoded


def _fit(x: np.ndarray, ds: PairDataset, variant: Variant, seed: int) -> LearnedRouter:
    return train_router(
        x,
        _labels(ds, variant.target),
        kind="pre_generation",
        feature_names=PROMPT_FEATURE_NAMES if variant.prompt_stats else (),
        use_embedding=True,
        target=variant.target,
        c=variant.c,
        seed=seed,
        embedding_dim=x.shape[1] - (len(PROMPT_FEATURE_NAMES) if variant.prompt_stats else 0),
    )


def cross_validate(encoded: np.ndarray, stats: np.ndarray, ds: PairDataset, folds: int, seed: int) -> dict[str, float]:
    """Mean out-of-fold APGR of every variant on the training prompts."""
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    results: dict[str, float] = {}
    for variant in VARIANTS:
        x = _design(encoded, stats, variant)
        need = np.empty(len(ds))
        for train_idx, val_idx in splitter.split(x, _strata(ds)):
            router = _fit(x[train_idx], ds.subset(train_idx), variant, seed)
            need[val_idx] = -router.score_matrix(x[val_idx])
        results[variant.label] = summarize(routing_curve(need, ds.weak_ok, ds.strong_ok)).apgr
    return results


def _cross_fit(
    encoded: np.ndarray, stats: np.ndarray, ds: PairDataset, variant: Variant, folds: int, seed: int
) -> dict[str, Any]:
    """The chosen variant scored out-of-fold on every prompt (k-fold cross-fitting): a lower-variance
    estimate than one held-out split, over the whole dataset."""
    x = _design(encoded, stats, variant)
    need = np.empty(len(ds))
    for train_idx, val_idx in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, _strata(ds)):
        need[val_idx] = -_fit(x[train_idx], ds.subset(train_idx), variant, seed).score_matrix(x[val_idx])
    router = summarize(routing_curve(need, ds.weak_ok, ds.strong_ok), SHARES).as_dict()
    length = summarize(routing_curve(stats[:, 0], ds.weak_ok, ds.strong_ok), SHARES).as_dict()
    low, high = bootstrap_apgr(need, ds.weak_ok, ds.strong_ok, seed=seed)
    return {
        "folds": folds,
        "n": len(ds),
        "router": router,
        "prompt length only": length,
        "router_apgr_bootstrap_95": [low, high],
    }


def _curve_json(curve: Curve, points: int = 101) -> dict[str, list[float]]:
    grid = np.linspace(0.0, 1.0, points)
    return {"share": grid.round(4).tolist(), "quality": [round(curve.quality_at(s), 6) for s in grid]}


def plot(curves: dict[str, Curve], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, curve in curves.items():
        ax.plot(curve.share * 100, curve.quality * 100, label=label, linewidth=1.4)
    any_curve = next(iter(curves.values()))
    ax.axhline(any_curve.weak_quality * 100, color="grey", linestyle="--", linewidth=0.8, label="weak only")
    ax.axhline(any_curve.strong_quality * 100, color="red", linestyle="--", linewidth=0.8, label="strong only")
    ax.set_xlabel("strong-model calls (%)")
    save_figure(fig, ax, title, path, legend_loc="lower right", legend_size=8)


def save_figure(fig: Any, ax: Any, title: str, path: Path, legend_loc: str, legend_size: int) -> None:
    """Finish a quality plot (y label, title, grid, legend) and write it as a PNG."""
    import matplotlib.pyplot as plt

    ax.set_ylabel("quality (% correct)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size, loc=legend_loc)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_eval(
    dataset: str,
    data_dir: Path,
    out_dir: Path,
    encoder: str = "minilm",
    test_fraction: float = 0.3,
    seed: int = 0,
    folds: int = 3,
    embedder: PromptEmbedder | None = None,
    save_router: Path | None = None,
    cross_fit_folds: int = 5,
) -> dict[str, Any]:
    """Train on a split, evaluate on the held-out part, write ``<out_dir>/router_eval_<name>.{json,png}``.

    With the sentence encoder, also cross-fit the chosen variant over all prompts (``cross_fit_folds``)."""
    if encoder not in ENCODERS:
        raise ValueError(f"unknown encoder {encoder!r}; expected one of {list(ENCODERS)}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    ds = load_dataset(dataset, data_dir)
    if ds.strong_ok.mean() <= ds.weak_ok.mean():
        raise ValueError(f"{ds.name}: the strong model is not better than the weak one; nothing to route")
    idx = np.arange(len(ds))
    train_idx, test_idx = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=_strata(ds))
    train, test = ds.subset(train_idx), ds.subset(test_idx)

    if encoder == "minilm":
        vectors = (embedder or PromptEmbedder()).embed_cached(ds.prompts)
        enc_train, enc_test = vectors[train_idx], vectors[test_idx]
    else:
        tfidf = TfidfEncoder(seed)
        enc_train, enc_test = tfidf.fit_transform(train.prompts), tfidf.transform(test.prompts)
    stats_train, stats_test = prompt_matrix(train.prompts), prompt_matrix(test.prompts)

    cv = cross_validate(enc_train, stats_train, train, folds, seed)
    best = max(VARIANTS, key=lambda v: cv[v.label])
    router = _fit(_design(enc_train, stats_train, best), train, best, seed)
    need = -router.score_matrix(_design(enc_test, stats_test, best))

    curves = {
        f"router ({encoder})": routing_curve(need, test.weak_ok, test.strong_ok),
        "prompt length only": routing_curve(stats_test[:, 0], test.weak_ok, test.strong_ok),
        "random": random_curve(test.weak_ok, test.strong_ok),
        "oracle": routing_curve(oracle_strong_need(test.weak_ok, test.strong_ok), test.weak_ok, test.strong_ok),
    }
    metrics = {label: summarize(curve, SHARES).as_dict() for label, curve in curves.items()}
    cross_fit = None
    if encoder == "minilm" and cross_fit_folds > 1:
        cross_fit = _cross_fit(vectors, prompt_matrix(ds.prompts), ds, best, cross_fit_folds, seed)
    low, high = bootstrap_apgr(need, test.weak_ok, test.strong_ok, seed=seed)
    name = ds.name if dataset in ("routellm-mmlu", "routellm-gsm8k") else Path(dataset).stem
    result: dict[str, Any] = {
        "dataset": ds.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "encoder": MODEL_NAME if encoder == "minilm" else "tfidf-svd256",
        "n_train": len(train),
        "n_test": len(test),
        "test_fraction": test_fraction,
        "seed": seed,
        "weak_quality_test": float(test.weak_ok.mean()),
        "strong_quality_test": float(test.strong_ok.mean()),
        "cv_apgr_by_variant": cv,
        "chosen_variant": asdict(best) | {"label": best.label},
        "metrics": metrics,
        "router_apgr_bootstrap_95": [low, high],
        "cross_fit_all_prompts": cross_fit,
        "curves": {label: _curve_json(curve) for label, curve in curves.items()},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    plot(
        curves, f"{ds.name}: quality vs strong-model calls (held-out {len(test)})", out_dir / f"router_eval_{name}.png"
    )
    (out_dir / f"router_eval_{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    if save_router is not None and encoder == "minilm":
        from router.artefact import save_router as save

        router.threshold = float(np.quantile(router.score_matrix(_design(enc_train, stats_train, best)), 0.3))
        meta = {
            "trained_on": ds.name,
            "n_train": len(train),
            "variant": best.label,
            "threshold_rule": "30% of the training prompts score below it (sent to the strong model)",
            "test_metrics": metrics,
        }
        result["saved_router"] = str(save(router, save_router, meta))
    return result
