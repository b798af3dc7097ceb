"""Promotion: the versioned registry of students, the hot swap into vLLM, the gateway switch, rollback.

Registry layout (``distill.registry_dir``, default ``var/registry/student``)::

    v0001/            adapter_config.json, adapter_model.safetensors (LoRA) or a full model folder,
                      manifest.json (version, model name, base model, run id, metrics, previous version)
    v0002/
    current           the serving version's name ("base": the base model, no adapter), replaced atomically

Promoting a LoRA candidate: copy it to the next version folder, load it into the running vLLM student
(``POST {student}/v1/load_lora_adapter {"lora_name", "lora_path"}``) under the name
``<student model>-distill-vNNNN``, switch the gateway's student model (``POST {gateway}/admin/student
{"model": NAME}``) when ``distill.gateway_admin_url`` is set, then move the ``current`` pointer. Rollback
points the gateway (and ``current``) back to the previous version, loading its adapter again if vLLM has
forgotten it (e.g. after a restart), and gives the gateway back the router threshold it had before the
rolled-back version was promoted (recorded in that version's manifest as ``threshold_before``). A promotion
that fails after loading its adapter unloads it again, and a new version's name is always loaded afresh, so a
retry never serves the weights of an earlier failed attempt under the same name. A fully fine-tuned student
cannot be hot-swapped: it is registered and the report says to restart the student server on its folder.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from cascade.config import Settings
from cascade.files import write_atomic
from cascade.versions import next_version, staged_version, version_names
from serving.vllm import bearer, load_lora_adapter, unload_lora_adapter

BASE = "base"
MANIFEST = "manifest.json"


class PromotionError(RuntimeError):
    """A step of promotion or rollback failed; the message names the step and the server's answer."""


@dataclass(frozen=True, slots=True)
class Version:
    name: str  # v0003
    path: Path
    manifest: dict[str, Any]

    @property
    def model_name(self) -> str:
        return str(self.manifest["model_name"])

    @property
    def method(self) -> str:
        return str(self.manifest.get("method", "lora"))

    @property
    def previous(self) -> str | None:
        value = self.manifest.get("previous")
        return str(value) if value else None


class Registry:
    """Versioned student folders with a ``current`` pointer."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def versions(self) -> list[str]:
        """The complete versions (with their manifest), oldest first."""
        return version_names(self.root, lambda path: (path / MANIFEST).exists())

    def get(self, name: str) -> Version:
        path = self.root / name
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            raise PromotionError(f"registry {self.root}: no version {name!r}") from None
        return Version(name, path, manifest)

    def current(self) -> Version | None:
        """The serving version, or None when the base model serves."""
        try:
            name = (self.root / "current").read_text().strip()
        except FileNotFoundError:
            return None
        return None if name in ("", BASE) else self.get(name)

    def next_name(self) -> str:
        return next_version(self.versions())

    def add(self, source: Path, manifest: dict[str, Any]) -> Version:
        """Copy ``source`` into the next version folder with its manifest (staged, then renamed)."""
        name = self.next_name()
        manifest = {**manifest, "version": name}
        with staged_version(self.root, name) as staging:
            shutil.copytree(source, staging)
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        return Version(name, self.root / name, manifest)

    def annotate(self, version: Version, **fields: Any) -> Version:
        """Add fields to a version's manifest (replaced atomically)."""
        manifest = {**version.manifest, **fields}
        write_atomic(version.path / MANIFEST, json.dumps(manifest, indent=2) + "\n", durable=True)
        return Version(version.name, version.path, manifest)

    def set_current(self, name: str | None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.root / "current", (name or BASE) + "\n", durable=True)

    def prune(self, keep: int) -> list[str]:
        """Delete the oldest versions beyond ``keep``, never the current one or its previous."""
        current = self.current()
        protected = {current.name, current.previous} if current else set()
        names = self.versions()
        removed = []
        for name in names[: max(len(names) - keep, 0)]:
            if name not in protected:
                shutil.rmtree(self.root / name)
                removed.append(name)
        return removed


def served_models(student_url: str, api_key: str | None = None, timeout_s: float = 10.0) -> set[str]:
    """The model names (base and loaded adapters) a vLLM server answers to (``GET /v1/models``)."""
    try:
        response = httpx.get(f"{student_url}/models", headers=bearer(api_key), timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise PromotionError(f"student server {student_url} cannot be reached: {exc}") from None
    if response.status_code != 200:
        raise PromotionError(f"student server {student_url}/models: HTTP {response.status_code}: {response.text}")
    return {model["id"] for model in response.json().get("data", [])}


def ensure_loaded(student_url: str, version: Version, api_key: str | None = None, fresh: bool = False) -> None:
    """Load the version's adapter into the vLLM student unless it already serves that name; ``fresh``: a name
    it serves already is a leftover of an earlier attempt, unloaded first."""
    if version.model_name in served_models(student_url, api_key):
        if not fresh:
            return
        unload(student_url, version.model_name, api_key)
    try:
        load_lora_adapter(student_url, version.model_name, version.path.resolve(), api_key=api_key)
    except (RuntimeError, httpx.HTTPError) as exc:
        raise PromotionError(f"loading {version.model_name} into the student at {student_url}: {exc}") from None


def unload(student_url: str, name: str, api_key: str | None = None) -> None:
    try:
        unload_lora_adapter(student_url, name, api_key=api_key)
    except (RuntimeError, httpx.HTTPError) as exc:
        raise PromotionError(f"unloading {name} from the student at {student_url}: {exc}") from None


def _post_admin(
    admin_url: str, path: str, body: dict[str, Any], key: str | None, what: str, timeout_s: float
) -> dict[str, Any]:
    headers = bearer(key)
    url = f"{admin_url.rstrip('/')}{path}"
    try:
        response = httpx.post(url, json=body, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise PromotionError(f"{what} at {url}: {exc}") from None
    if response.status_code >= 300:
        raise PromotionError(f"{what} at {url}: HTTP {response.status_code}: {response.text}")
    answer = response.json()
    return answer if isinstance(answer, dict) else {}


def set_gateway_threshold(admin_url: str, threshold: float, key: str | None, timeout_s: float = 10.0) -> float | None:
    """``POST {admin_url}/admin/threshold {"threshold": t}``: the recalibrated threshold for the new student;
    returns the threshold it replaced."""
    answer = _post_admin(
        admin_url, "/admin/threshold", {"threshold": threshold}, key, "setting the gateway's threshold", timeout_s
    )
    previous = answer.get("previous")
    return float(previous) if isinstance(previous, int | float) else None


def apply_threshold(registry: Registry, version: Version | None, target: Target, threshold: float) -> float | None:
    """Send a certified threshold to the gateway for the serving ``version`` (None: the base model) and keep
    it in the version's manifest with the one it replaced (``threshold_before``: the first one replaced, which a
    rollback restores). Returns the threshold replaced. Raises :class:`PromotionError` without an admin URL."""
    if target.gateway_admin_url is None:
        raise PromotionError("distill.gateway_admin_url is not set: set router.threshold to apply the threshold")
    before = set_gateway_threshold(target.gateway_admin_url, threshold, target.gateway_admin_key)
    if version is not None:
        first = version.manifest.get("threshold_before")
        first = before if first is None else first
        registry.annotate(version, threshold=threshold, threshold_before=first)
    return before


def switch_gateway(
    admin_url: str, model: str, key: str | None, lora_path: Path | None = None, timeout_s: float = 10.0
) -> None:
    """``POST {admin_url}/admin/student {"model", "lora_path"}`` (Bearer ``key``): the gateway's student becomes
    ``model``; with the adapter's path, the gateway loads it again into a student server that forgot it."""
    body: dict[str, Any] = {"model": model}
    if lora_path is not None:
        body["lora_path"] = str(lora_path)
    _post_admin(admin_url, "/admin/student", body, key, "switching the gateway's student", timeout_s)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a promotion goes: the vLLM student, and the gateway's admin endpoint if any."""

    @classmethod
    def of(cls, settings: Settings) -> Target:
        d = settings.distill
        return cls(
            student_url=settings.student.url,
            base_model_name=settings.student.model,
            hot_swap=d.hot_swap,
            gateway_admin_url=d.gateway_admin_url,
            gateway_admin_key=d.gateway_admin_key or settings.server.admin_key,
            student_api_key=settings.student.api_key,
        )

    student_url: str  # OpenAI base URL ending in /v1
    base_model_name: str  # the name vLLM serves the base model under
    hot_swap: bool
    gateway_admin_url: str | None
    gateway_admin_key: str | None
    student_api_key: str | None = None  # the student server's key (vLLM --api-key), sent as a Bearer token


def promote(
    registry: Registry, candidate: Path, target: Target, method: str, keep: int, manifest: dict[str, Any]
) -> Version:
    """Register the candidate, hot-swap it (LoRA), switch the gateway, then move ``current``."""
    previous = registry.current()
    name = registry.next_name()
    model_name = f"{target.base_model_name}-distill-{name}"
    version = registry.add(
        candidate,
        {
            **manifest,
            "model_name": model_name if method == "lora" else target.base_model_name,
            "method": method,
            "previous": previous.name if previous else None,
            "created": datetime.now(UTC).isoformat(),
        },
    )
    loaded = False
    try:
        if method == "lora" and target.hot_swap:
            ensure_loaded(target.student_url, version, target.student_api_key, fresh=True)
            loaded = True
            if target.gateway_admin_url:
                switch_gateway(
                    target.gateway_admin_url, version.model_name, target.gateway_admin_key, version.path.resolve()
                )
    except PromotionError as exc:
        # Never served: the next attempt registers it again under the same name, and must not find these weights.
        if loaded:
            try:
                unload(target.student_url, version.model_name, target.student_api_key)
            except PromotionError as leftover:
                raise PromotionError(f"{exc}; and {leftover} (the next attempt replaces it)") from None
        shutil.rmtree(version.path)
        raise
    registry.set_current(version.name)
    registry.prune(keep)
    return version


def rollback(registry: Registry, target: Target) -> tuple[Version, Version | None]:
    """Serve the previous version again (None: the base model), with the router threshold it was served with;
    returns (rolled back, now serving)."""
    current = registry.current()
    if current is None:
        raise PromotionError(f"registry {registry.root}: the base model is serving; there is nothing to roll back")
    previous = registry.get(current.previous) if current.previous else None
    if target.hot_swap:
        name, path = target.base_model_name, None
        if previous is not None and previous.method == "lora":
            ensure_loaded(target.student_url, previous, target.student_api_key)
            name, path = previous.model_name, previous.path.resolve()
        if target.gateway_admin_url:
            switch_gateway(target.gateway_admin_url, name, target.gateway_admin_key, path)
    before = current.manifest.get("threshold_before")
    if target.gateway_admin_url and isinstance(before, int | float):
        set_gateway_threshold(target.gateway_admin_url, float(before), target.gateway_admin_key)
    registry.set_current(previous.name if previous else None)
    return current, previous
