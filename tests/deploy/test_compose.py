"""The compose stack: valid Compose files (compose-spec schema, offline), healthy start order, no secrets."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from cascade.config import LocalSettings
from tests.deploy.conftest import COMPOSE, REPO, InterpolationError, load_compose

SECRET_WORDS = ("PASSWORD", "API_KEY", "TOKEN", "SECRET")


@functools.cache
def compose_schema() -> dict[str, Any]:
    import check_jsonschema

    path = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema: dict[str, Any] = json.loads(path.read_text())
    return schema


def untag(node: Any) -> Any:
    """Replace Compose's ``!reset``/``!override`` markers by their values (what the schema sees)."""
    if isinstance(node, dict):
        if "__compose_tag__" in node:
            return untag(node["value"])
        return {key: untag(value) for key, value in node.items()}
    if isinstance(node, list):
        return [untag(value) for value in node]
    return node


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Compose's merge of an override file for the keys these files use: maps merge, the rest replaces."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and value.get("__compose_tag__") == "!reset":
            result.pop(key, None)
        elif isinstance(value, dict) and value.get("__compose_tag__") == "!override":
            result[key] = value["value"]
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = value
    return result


@pytest.fixture(scope="module")
def stack(env_example: dict[str, str]) -> dict[str, Any]:
    return load_compose("compose.yaml", env_example)


@pytest.fixture(scope="module")
def cpu_stack(env_example: dict[str, str], stack: dict[str, Any]) -> dict[str, Any]:
    return merge(stack, load_compose("compose.cpu.yaml", env_example))


@pytest.mark.parametrize("name", ["compose.yaml", "compose.cpu.yaml"])
def test_compose_files_pass_the_compose_spec_schema(env_example: dict[str, str], name: str) -> None:
    data = untag(load_compose(name, env_example))
    jsonschema.validate(data, compose_schema())


def test_schema_refuses_a_misspelt_key(stack: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(untag(stack)))
    broken["services"]["gateway"]["healthchek"] = broken["services"]["gateway"].pop("healthcheck")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, compose_schema())


def test_secrets_come_from_the_env_file_only(env_example: dict[str, str]) -> None:
    raw = load_compose("compose.yaml", env_example, raw=True)
    for name, service in raw["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if any(word in key for word in SECRET_WORDS) or ("://" in str(value) and "@" in str(value)):
                assert "${" in str(value), f"{name}.{key} holds a literal secret"
    without = {key: value for key, value in env_example.items() if key != "POSTGRES_PASSWORD"}
    with pytest.raises(InterpolationError, match="POSTGRES_PASSWORD"):
        load_compose("compose.yaml", without)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(COMPOSE / ".env")], cwd=REPO)
    assert ignored.returncode == 0, "deploy/compose/.env must be ignored by git"
    assert subprocess.run(["git", "check-ignore", "-q", str(COMPOSE / ".env.example")], cwd=REPO).returncode == 1


def test_every_service_is_health_checked_and_started_in_order(stack: dict[str, Any]) -> None:
    services = stack["services"]
    one_shot = {"distill", "volume-init"}  # they run and exit
    for name, service in services.items():
        if name not in one_shot:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            wanted = "service_completed_successfully" if dependency in one_shot else "service_healthy"
            assert condition["condition"] == wanted, (name, dependency)
    assert set(services["gateway"]["depends_on"]) == {"volume-init", "postgres", "redis", "student", "teacher"}
    # Every named volume a non-root service writes is handed to its uid first.
    init = {v.split(":")[0] for v in services["volume-init"]["volumes"]}
    for name in ("gateway", "distill"):
        assert services[name]["user"].split(":")[0] in services["volume-init"]["command"][2]
        written = {v.split(":")[0] for v in services[name]["volumes"] if not v.endswith(":ro")}
        assert written & set(stack["volumes"]) <= init, name
    assert services["gateway"]["depends_on"]["teacher"]["required"] is False  # the teacher may be an API
    assert "healthz" in " ".join(services["gateway"]["healthcheck"]["test"])


def test_images_are_pinned(stack: dict[str, Any], cpu_stack: dict[str, Any]) -> None:
    for data in (stack, cpu_stack):
        for name, service in data["services"].items():
            image = service["image"]
            tag = image.rpartition(":")[2]
            assert ":" in image and "/" not in tag and tag != "latest", f"{name}: {image}"
    assert stack["services"]["student"]["image"] == stack["services"]["teacher"]["image"]
    assert stack["services"]["student"]["image"].startswith("vllm/vllm-openai:v")


def test_gpu_student_serves_lora_adapters_at_runtime(stack: dict[str, Any]) -> None:
    student = stack["services"]["student"]
    assert "--enable-lora" in student["command"] and "--max-lora-rank=64" in student["command"]
    assert student["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    (device,) = student["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"
    # The job writes adapters where the student reads them, under the same path.
    student_mount = next(v for v in student["volumes"] if v.startswith("adapters:"))
    job_mount = next(v for v in stack["services"]["distill"]["volumes"] if v.startswith("adapters:"))
    assert student_mount == job_mount + ":ro"


def test_cpu_profile_reserves_no_gpu_and_keeps_lora(cpu_stack: dict[str, Any]) -> None:
    for name in ("student", "teacher", "distill"):
        assert "deploy" not in cpu_stack["services"][name], name
    student = cpu_stack["services"]["student"]
    assert student["image"].startswith("cascade/vllm-cpu:")
    assert student["build"]["dockerfile"] == "deploy/docker/vllm-cpu.Dockerfile"
    assert (REPO / student["build"]["dockerfile"]).is_file()
    assert "--enable-lora" in student["command"]
    assert not any(arg.startswith("--gpu-memory-utilization") for arg in student["command"])
    assert student["environment"]["VLLM_API_KEY"]  # still merged from compose.yaml


def test_mounted_paths_exist_and_match_what_reads_them(stack: dict[str, Any]) -> None:
    services = stack["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                built_by_prepare = (COMPOSE / source).resolve() == REPO / LocalSettings().models_dir
                assert built_by_prepare or (COMPOSE / source).resolve().exists(), f"{name} mounts missing {source}"
    prometheus_yml = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    mounts = dict(v.split(":")[1::-1] for v in services["prometheus"]["volumes"] if v.startswith("."))
    (rule_file,) = prometheus_yml["rule_files"]
    assert (COMPOSE / mounts[rule_file]).resolve() == REPO / "deploy" / "prometheus" / "alerts.yaml"
    targets = {t for job in prometheus_yml["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    assert targets == {"gateway:8000", "student:8000", "teacher:8000", "pushgateway:9091"}
    provisioning = yaml.safe_load((REPO / "grafana" / "provisioning" / "dashboards" / "cascade.yaml").read_text())
    grafana = dict(v.split(":")[1::-1] for v in services["grafana"]["volumes"] if v.startswith("."))
    dashboards = provisioning["providers"][0]["options"]["path"]
    assert (COMPOSE / grafana[dashboards]).resolve() == REPO / "grafana" / "dashboards"
    assert (COMPOSE / grafana["/etc/grafana/provisioning"]).resolve() == REPO / "grafana" / "provisioning"
    assert services["grafana"]["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make test` installs the Debian package prometheus")
    config = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    shutil.copy(REPO / "deploy" / "prometheus" / "alerts.yaml", tmp_path / "alerts.yaml")
    config["rule_files"] = [str(tmp_path / "alerts.yaml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
