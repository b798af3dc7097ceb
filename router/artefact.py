"""Router artefacts on disk: versioned, validated before use, swapped atomically.

Layout of an artefact root::

    <root>/current          text file naming the live version, e.g. "v0003" (replaced atomically)
    <root>/v0003/router.json  the sidecar: kind, features, threshold, embedding flag, metadata
    <root>/v0003/model.skops  the fitted scikit-learn model (absent for a signal router)

The model is stored with skops, whose loader refuses any type not on an allow-list (no arbitrary pickle
code runs on load). :func:`load_router` accepts the root (follows ``current``) or a version folder.
:class:`RouterSlot` holds the live router for the gateway; :meth:`RouterSlot.reload` loads and validates
a new artefact completely before swapping, and keeps the old router when anything is wrong.
"""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import skops.io as sio
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cascade.files import write_atomic
from cascade.versions import is_version, next_version, staged_version, version_names
from router.errors import RouterLoadError
from router.policy import Router, SignalRouter
from router.prompt_stats import PROMPT_FEATURE_NAMES
from router.scorers import KNOWN_FEATURES, LearnedRouter
from router.signals import FEATURE_NAMES

FORMAT_VERSION = 1
SIDECAR = "router.json"
MODEL_FILE = "model.skops"
CURRENT = "current"
# skops refuses unknown types on load; these are the families a router model is built from
_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")


class Sidecar(BaseModel):
    """The JSON sidecar of a router artefact."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    kind: Literal["signal", "post_hoc", "pre_generation"]
    threshold: float
    features: list[str] = Field(default_factory=list)
    use_embedding: bool = False
    target: Literal["student_ok", "gain"] = "student_ok"
    signal: str | None = None
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    metadata: dict[str, Any] = Field(default_factory=dict)


def _sidecar_for(router: Router, metadata: dict[str, Any]) -> Sidecar:
    if isinstance(router, SignalRouter):
        return Sidecar(kind="signal", threshold=router.threshold, signal=router.feature, metadata=metadata)
    if isinstance(router, LearnedRouter):
        return Sidecar(
            kind=router.kind,
            threshold=router.threshold,
            features=list(router.features),
            use_embedding=router.use_embedding,
            target=router.target,
            metadata=metadata,
        )
    raise TypeError(f"cannot save a router of type {type(router).__name__}")


def versions(root: Path) -> list[str]:
    """The version folders under ``root``, oldest first."""
    return version_names(root)


def current_version(root: Path) -> str | None:
    pointer = root / CURRENT
    if not pointer.is_file():
        return None
    return pointer.read_text().strip() or None


def set_current(root: Path, version: str) -> None:
    """Point ``current`` at ``version`` (which must load and validate) atomically."""
    load_router(root / version)
    write_atomic(root / CURRENT, version + "\n")


def save_router(router: Router, root: Path, metadata: dict[str, Any] | None = None, make_current: bool = True) -> Path:
    """Write ``router`` as the next version under ``root``; returns the version folder."""
    name = next_version(versions(root))
    sidecar = _sidecar_for(router, metadata or {})
    with staged_version(root, name) as staging:
        staging.mkdir()
        if isinstance(router, LearnedRouter):
            sio.dump(router.model, staging / MODEL_FILE)
        (staging / SIDECAR).write_text(sidecar.model_dump_json(indent=2) + "\n")
    final = root / name
    load_router(final)  # never publish what cannot be read back
    if make_current:
        write_atomic(root / CURRENT, name + "\n")
    return final


def _resolve(path: Path) -> Path:
    if (path / SIDECAR).is_file():
        return path
    version = current_version(path)
    if version is None:
        raise RouterLoadError(f"{path}: neither a router version folder nor a root with a '{CURRENT}' file")
    if not is_version(version):
        raise RouterLoadError(f"{path / CURRENT}: names {version!r}, not a version")
    return path / version


def _load_model(path: Path) -> Any:
    if not path.is_file():
        raise RouterLoadError(f"{path}: missing")
    untrusted = sio.get_untrusted_types(file=path)
    refused = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
    if refused:
        raise RouterLoadError(f"{path}: refuses to load unexpected types {refused}")
    return sio.load(path, trusted=untrusted)


def _validate_learned(router: LearnedRouter, where: Path) -> None:
    n_in = getattr(router.model, "n_features_in_", None)
    if n_in != router.n_inputs:
        raise RouterLoadError(f"{where}: model expects {n_in} inputs, the sidecar describes {router.n_inputs}")
    if not hasattr(router.model, "predict_proba"):
        raise RouterLoadError(f"{where}: model has no predict_proba")
    probe = np.zeros((2, router.n_inputs))
    if router.use_embedding:
        probe[:, len(router.features)] = 1.0  # a unit vector, like a real normalised embedding
    classes = sorted(int(c) for c in getattr(router.model, "classes_", ()))
    expected = [-1, 0, 1] if router.target == "gain" else [0, 1]
    if not set(classes) <= set(expected) or {expected[0], expected[-1]} - set(classes):
        raise RouterLoadError(f"{where}: model classes {classes} do not fit target {router.target!r}")
    low = -1.0 if router.target == "gain" else 0.0
    scores = router.score_matrix(probe)
    if scores.shape != (2,) or not np.all(np.isfinite(scores) & (scores >= low) & (scores <= 1)):
        raise RouterLoadError(f"{where}: model's probe scores {scores} are out of range")


def load_router(path: Path) -> Router:
    """Load and validate the router at ``path`` (a version folder, or a root following ``current``)."""
    folder = _resolve(Path(path))
    try:
        sidecar = Sidecar.model_validate_json((folder / SIDECAR).read_text())
    except (OSError, ValidationError, ValueError) as exc:
        raise RouterLoadError(f"{folder / SIDECAR}: {exc}") from exc
    if sidecar.format_version != FORMAT_VERSION:
        raise RouterLoadError(f"{folder}: format version {sidecar.format_version}, expected {FORMAT_VERSION}")
    if not math.isfinite(sidecar.threshold):
        raise RouterLoadError(f"{folder}: threshold {sidecar.threshold} is not finite")
    unknown = [f for f in sidecar.features if f not in KNOWN_FEATURES]
    if unknown:
        raise RouterLoadError(f"{folder}: unknown feature(s) {unknown}")
    if sidecar.kind == "signal":
        if sidecar.signal not in FEATURE_NAMES:
            raise RouterLoadError(f"{folder}: signal router names unknown feature {sidecar.signal!r}")
        return SignalRouter(sidecar.signal, sidecar.threshold)
    if sidecar.kind == "pre_generation" and not set(sidecar.features) <= set(PROMPT_FEATURE_NAMES):
        raise RouterLoadError(f"{folder}: a pre-generation router cannot use answer features")
    if not sidecar.features and not sidecar.use_embedding:
        raise RouterLoadError(f"{folder}: a learned router needs features or the embedding")
    try:
        model = _load_model(folder / MODEL_FILE)
    except RouterLoadError:
        raise
    except Exception as exc:  # skops raises many types on corrupt files
        raise RouterLoadError(f"{folder / MODEL_FILE}: cannot load: {exc}") from exc
    router = LearnedRouter(
        sidecar.kind, model, tuple(sidecar.features), sidecar.use_embedding, sidecar.threshold, sidecar.target
    )
    _validate_learned(router, folder)
    return router


def read_sidecar(path: Path) -> Sidecar:
    """The sidecar (metadata) of the router at ``path``."""
    return Sidecar.model_validate_json((_resolve(Path(path)) / SIDECAR).read_text())


class RouterSlot:
    """The live router, replaced only by one that loaded and validated completely."""

    def __init__(self, router: Router, source: Path | None = None):
        self._router = router
        self._source = source
        self._lock = threading.Lock()

    @classmethod
    def from_path(cls, path: Path) -> RouterSlot:
        return cls(load_router(path), Path(path))

    @property
    def router(self) -> Router:
        return self._router

    @property
    def source(self) -> Path | None:
        return self._source

    def reload(self, path: Path | None = None, warm: bool = True) -> Router:
        """Load the artefact at ``path`` (default: the current source), validate it, then swap.

        With ``warm`` a router that embeds prompts loads its embedder before the swap, so no request
        waits for it. On any failure raise :class:`RouterLoadError` and keep serving the previous router."""
        target = Path(path) if path is not None else self._source
        if target is None:
            raise RouterLoadError("no artefact path to reload from")
        new = load_router(target)
        if warm and isinstance(new, LearnedRouter):
            try:
                new.warm_up()
            except Exception as exc:
                raise RouterLoadError(f"{target}: the prompt embedder failed to load: {exc}") from exc
        with self._lock:
            self._router = new
            self._source = target
        return new
