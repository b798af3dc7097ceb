"""Fixtures for the deployment checks: rendered Kubernetes overlays and interpolated compose files."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "compose"
OVERLAYS = ("gpu", "cpu")
KUBERNETES_VERSION = "1.32"  # the oldest minor version the manifests must pass


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is missing (it renders the kustomize overlays): install the Debian package kubectl")
    return path


def render_overlay(overlay: str) -> list[dict[str, Any]]:
    """``kubectl kustomize deploy/k8s/overlays/OVERLAY`` as a list of objects."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kustomize {overlay}: {result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {overlay: render_overlay(overlay) for overlay in OVERLAYS}


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod template's spec of a Deployment, Job or CronJob."""
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    result: dict[str, Any] = spec["template"]["spec"]
    return result


def container_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


# --- compose -------------------------------------------------------------------------------------------


class ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's merge tags: ``!reset`` and ``!override`` keep their value, marked."""


def _tagged(tag: str) -> Any:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            value: Any = loader.construct_mapping(node, deep=True)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_scalar(node)  # type: ignore[arg-type]
        return {"__compose_tag__": tag, "value": value}

    return construct


ComposeLoader.add_constructor("!reset", _tagged("!reset"))
ComposeLoader.add_constructor("!override", _tagged("!override"))

_VARIABLE = re.compile(
    r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose variable interpolation: ``${V}``, ``${V:-d}``, ``${V-d}``, ``${V:?e}``, ``${V?e}``, ``$$``."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        empty = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-"):
            return arg if empty else str(value)
        if op in (":?", "?"):
            if empty:
                raise InterpolationError(f"{name}: {arg}")
            return str(value)
        if value is None:
            raise InterpolationError(f"{name} is used without a default and is not set in .env.example")
        return value

    return _VARIABLE.sub(replace, text)


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
        values[key.strip()] = value.strip()
    return values


def _interpolate_values(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: _interpolate_values(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_interpolate_values(value, env) for value in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def load_compose(name: str, env: dict[str, str], raw: bool = False) -> dict[str, Any]:
    """A compose file parsed as Compose does: YAML first, then variables interpolated in values."""
    data: dict[str, Any] = yaml.load((COMPOSE / name).read_text(), Loader=ComposeLoader)
    if raw:
        return data
    result: dict[str, Any] = _interpolate_values(data, env)
    return result


@pytest.fixture(scope="session")
def env_example() -> dict[str, str]:
    return read_env_file(COMPOSE / ".env.example")
