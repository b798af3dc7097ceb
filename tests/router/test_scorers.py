"""Scorers trained on small fixed feature arrays; artefacts saved, versioned, loaded and hot-reloaded."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cascade.logprobs import TokenLogprobs
from router.artefact import (
    CURRENT,
    RouterLoadError,
    RouterSlot,
    current_version,
    load_router,
    read_sidecar,
    save_router,
    set_current,
    versions,
)
from router.embedding import DIMENSION
from router.policy import RouteInput, Router, SignalRouter, decide
from router.scorers import LearnedRouter, design_matrix, train_router
from router.signals import FEATURE_NAMES, feature_matrix

RNG = np.random.default_rng(11)


def answer(probs: list[float]) -> TokenLogprobs:
    lp = np.log(probs)
    top = np.stack([lp, np.log(np.clip(1 - np.asarray(probs), 1e-6, None))], axis=1)
    return TokenLogprobs.from_arrays(lp, top)


def dataset(n: int = 400) -> tuple[list[TokenLogprobs], np.ndarray]:
    """Answers whose correctness follows their least likely tokens: P(ok) = q10 of token probability."""
    answers = [answer(list(RNG.uniform(low, 1.0, 8))) for low in RNG.uniform(0.01, 0.99, n)]
    q10 = feature_matrix(answers, ["prob_q10"])[:, 0]
    return answers, RNG.uniform(size=n) < q10


ANSWERS, OK = dataset()
X = feature_matrix(ANSWERS)


@pytest.fixture(scope="module")
def post_hoc() -> LearnedRouter:
    return train_router(X, OK, kind="post_hoc", feature_names=FEATURE_NAMES, threshold=0.6)


def test_learned_router_ranks_right_answers_above_wrong_ones(post_hoc: LearnedRouter) -> None:
    answers, ok = dataset(300)
    scores = np.array([post_hoc.score(RouteInput(answer=a)) for a in answers])
    assert scores[ok].mean() > scores[~ok].mean() + 0.15
    assert np.all((scores >= 0) & (scores <= 1))
    batch = post_hoc.score_matrix(feature_matrix(answers))
    assert np.allclose(batch, scores)


def test_gradient_boosting_also_learns() -> None:
    router = train_router(X, OK, kind="post_hoc", feature_names=FEATURE_NAMES, model="gbdt")
    answers, ok = dataset(300)
    scores = router.score_matrix(feature_matrix(answers))
    assert scores[ok].mean() > scores[~ok].mean() + 0.1


def test_decide_compares_score_with_threshold(post_hoc: LearnedRouter) -> None:
    sure, unsure = answer([0.99] * 8), answer([0.05] * 8)
    assert decide(post_hoc, RouteInput(answer=sure)).accept
    low = decide(post_hoc, RouteInput(answer=unsure))
    assert not low.accept and low.reason == "not_confident" and low.confidence < 0.6


def test_signal_router_scores_one_feature() -> None:
    router = SignalRouter("min_prob", threshold=0.5)
    assert isinstance(router, Router)
    assert router.score(RouteInput(answer=answer([0.9, 0.4]))) == pytest.approx(0.4)
    assert not decide(router, RouteInput(answer=answer([0.9, 0.4]))).accept
    with pytest.raises(ValueError, match="unknown feature"):
        SignalRouter("nope", 0.5)
    with pytest.raises(ValueError, match="needs the student's answer"):
        router.score(RouteInput(prompt="hi"))


def test_gain_target_scores_weak_minus_strong() -> None:
    emb = RNG.normal(size=(300, DIMENSION))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    gain = np.where(emb[:, 0] > 0, 1, np.where(emb[:, 1] > 0.05, -1, 0))  # strong wins where dim 0 > 0
    router = train_router(emb, gain, kind="pre_generation", use_embedding=True, target="gain", c=10.0)
    scores = router.score_matrix(emb)
    assert np.all((scores >= -1) & (scores <= 1))
    assert scores[gain == 1].mean() < scores[gain == -1].mean()
    assert router.score(RouteInput(embedding=emb[0])) == pytest.approx(scores[0])


def test_training_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="lack class"):
        train_router(X, np.ones(len(X), bool), kind="post_hoc", feature_names=FEATURE_NAMES)
    with pytest.raises(ValueError, match="columns"):
        train_router(X[:, :3], OK, kind="post_hoc", feature_names=FEATURE_NAMES)
    with pytest.raises(ValueError, match="unknown feature"):
        train_router(X[:, :1], OK, kind="post_hoc", feature_names=["nope"])
    with pytest.raises(ValueError, match="needs answer features, embeddings"):
        design_matrix(None, None)


def test_save_load_round_trip_and_versions(tmp_path: Path, post_hoc: LearnedRouter) -> None:
    root = tmp_path / "routers"
    first = save_router(post_hoc, root, {"trained_on": "fixed", "n": len(X)})
    second = save_router(SignalRouter("prob_q10", 0.3), root, {"note": "fallback"}, make_current=False)
    assert versions(root) == ["v0001", "v0002"] and first.name == "v0001" and second.name == "v0002"
    assert current_version(root) == "v0001"

    loaded = load_router(root)  # follows `current`
    assert isinstance(loaded, LearnedRouter) and loaded.threshold == 0.6
    assert np.allclose(loaded.score_matrix(X[:20]), post_hoc.score_matrix(X[:20]))
    meta = read_sidecar(root)
    assert meta.metadata == {"trained_on": "fixed", "n": len(X)} and meta.features == list(FEATURE_NAMES)

    set_current(root, "v0002")
    assert isinstance(load_router(root), SignalRouter)
    assert json.loads((second / "router.json").read_text())["signal"] == "prob_q10"


def test_reload_swaps_only_a_valid_artefact(tmp_path: Path, post_hoc: LearnedRouter) -> None:
    root = tmp_path / "routers"
    save_router(post_hoc, root)
    slot = RouterSlot.from_path(root)
    before = slot.router

    bad = save_router(SignalRouter("min_prob", 0.2), root)
    sidecar = json.loads((bad / "router.json").read_text())
    sidecar["threshold"] = math.nan
    (bad / "router.json").write_text(json.dumps(sidecar).replace("NaN", "NaN"))
    with pytest.raises(RouterLoadError, match="not finite"):
        slot.reload()
    assert slot.router is before

    (bad / "router.json").write_text("{not json")
    with pytest.raises(RouterLoadError):
        slot.reload()
    assert slot.router is before

    good = save_router(SignalRouter("min_prob", 0.25), root)
    assert (root / CURRENT).read_text().strip() == good.name
    new = slot.reload()
    assert isinstance(new, SignalRouter) and slot.router is new and new.threshold == 0.25


def test_corrupt_or_mismatched_model_is_refused(tmp_path: Path, post_hoc: LearnedRouter) -> None:
    version = save_router(post_hoc, tmp_path)
    sidecar = json.loads((version / "router.json").read_text())
    sidecar["features"] = sidecar["features"][:3]  # the model expects all of them
    (version / "router.json").write_text(json.dumps(sidecar))
    with pytest.raises(RouterLoadError, match=f"expects {len(FEATURE_NAMES)} inputs"):
        load_router(version)
    (version / "model.skops").write_bytes(b"garbage")
    with pytest.raises(RouterLoadError, match="cannot load"):
        load_router(version)
    with pytest.raises(RouterLoadError, match="neither a router version"):
        load_router(tmp_path / "missing")


def test_numpy_fast_path_equals_scikit_learn(post_hoc: LearnedRouter) -> None:
    rows = feature_matrix(dataset(50)[0])
    assert np.allclose(post_hoc.score_matrix(rows), post_hoc.model.predict_proba(rows)[:, 1], atol=1e-12)
    emb = RNG.normal(size=(200, DIMENSION))
    gain = RNG.integers(-1, 2, 200)
    multi = train_router(emb, gain, kind="pre_generation", use_embedding=True, target="gain")
    proba = multi.model.predict_proba(emb[:20])
    assert np.allclose(multi.score_matrix(emb[:20]), proba[:, 0] - proba[:, 2], atol=1e-12)
