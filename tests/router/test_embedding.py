"""The packaged sentence embedder (the one router test that loads a real model), its cache, the datasets."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from router.agreement import embedding_agreement
from router.datasets import STRONG_MODEL, WEAK_MODEL, DatasetError, load_dataset
from router.embedding import DIMENSION, PromptEmbedder, content_key
from router.policy import RouteInput
from router.scorers import train_router


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> PromptEmbedder:
    return PromptEmbedder(cache_dir=tmp_path_factory.mktemp("embeddings"))


def test_embedder_loads_lazily_and_embeds_meaningfully(embedder: PromptEmbedder) -> None:
    assert not embedder.loaded
    vectors = embedder.embed(["How do I reset my card PIN?", "I forgot my card's PIN code.", "Boil pasta."])
    assert embedder.loaded and vectors.shape == (3, DIMENSION)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3


def test_dataset_embeddings_are_cached_by_content(embedder: PromptEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ["first prompt", "second prompt"]
    first = embedder.embed_cached(texts)
    assert embedder.cache_dir is not None
    assert (embedder.cache_dir / f"{content_key(texts)}.npy").is_file()

    def refuse(_: object) -> np.ndarray:
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(embedder, "embed", refuse)
    assert np.array_equal(embedder.embed_cached(texts), first)
    assert content_key(texts) != content_key(texts[::-1])


def test_pre_generation_router_embeds_the_prompt_itself(embedder: PromptEmbedder) -> None:
    prompts = ["solve the integral of x squared", "what colour is the sky", "prove the theorem", "say hello"] * 10
    gain = np.array([1, -1, 1, -1] * 10)
    router = train_router(embedder.embed(prompts), gain, kind="pre_generation", use_embedding=True, target="gain")
    router.embedder = embedder
    assert router.score(RouteInput(prompt="integrate x cubed")) < router.score(RouteInput(prompt="say hi"))


def test_embedding_agreement(embedder: PromptEmbedder) -> None:
    agree = embedding_agreement(0.8, embedder)
    assert agree("The capital of France is Paris.", "Paris is the capital of France.")
    assert not agree("The capital of France is Paris.", "Bake the bread for an hour.")


def test_named_datasets_read_the_routellm_layout(tmp_path: Path) -> None:
    mmlu = tmp_path / "routellm" / "mmlu"
    mmlu.mkdir(parents=True)
    for subject, rows in {
        "anatomy": [("Q1", "True", "True"), ("Q2", "False", "True")],
        "law": [("Q3", "True", "False")],
    }.items():
        with (mmlu / f"mmlu_{subject}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["prompt", WEAK_MODEL, STRONG_MODEL])
            writer.writerows(rows)
    ds = load_dataset("routellm-mmlu", tmp_path)
    assert ds.prompts == ["Q1", "Q2", "Q3"] and ds.groups == ["anatomy", "anatomy", "law"]
    assert ds.weak_ok.tolist() == [True, False, True] and ds.strong_ok.tolist() == [True, True, False]
    with pytest.raises(DatasetError, match=r"gsm8k_responses\.csv: no such file"):
        load_dataset("routellm-gsm8k", tmp_path)
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("mmlu", tmp_path)


def test_reload_warms_the_embedder_before_swapping(
    embedder: PromptEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from router import scorers
    from router.artefact import RouterLoadError, RouterSlot, save_router
    from router.policy import SignalRouter

    prompts = ["integrate x squared", "say hello"] * 10
    router = train_router(
        embedder.embed(prompts), np.array([1, -1] * 10), kind="pre_generation", use_embedding=True, target="gain"
    )
    save_router(router, tmp_path)
    slot = RouterSlot(SignalRouter("min_prob", 0.5), tmp_path)
    old = slot.router

    def broken() -> PromptEmbedder:
        raise OSError("model files missing")

    monkeypatch.setattr(scorers, "default_embedder", broken)
    with pytest.raises(RouterLoadError, match="embedder failed to load"):
        slot.reload()
    assert slot.router is old

    monkeypatch.setattr(scorers, "default_embedder", lambda: embedder)
    new = slot.reload()
    assert slot.router is new and new.kind == "pre_generation"
    assert new.score(RouteInput(prompt="integrate x cubed")) < new.score(RouteInput(prompt="say hi"))
