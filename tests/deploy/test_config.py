"""One source of truth: what the manifests name (config, ports, paths, env vars) is what the code has."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from cascade.config import Settings, load_settings
from gateway.routes import api
from tests.deploy.conftest import (
    COMPOSE,
    DEPLOY,
    OVERLAYS,
    REPO,
    container_env,
    find,
    load_compose,
    pod_spec,
    read_env_file,
)

Objects = dict[str, list[dict[str, Any]]]
CONFIG_PATH = "/etc/cascade/cascade.yaml"
# Placeholder values for what the Secret / .env supply: shaped as the real ones must be.
SECRET_VALUES = {
    "CASCADE_LOG_STORE__URL": "postgresql+asyncpg://cascade:pw@postgres.db:5432/cascade",
    "CASCADE_STUDENT__API_KEY": "student-key",
    "CASCADE_TEACHER__API_KEY": "teacher-key",
    "CASCADE_SERVER__ADMIN_KEY": "admin-key-of-at-least-16-chars",
}


def config_key(env_name: str) -> tuple[str, ...] | None:
    """The config key an env var sets (CASCADE_A__B -> ('a', 'b')), or None when no such key exists."""
    if not env_name.startswith("CASCADE_"):
        return None
    parts = tuple(env_name.removeprefix("CASCADE_").lower().split("__"))
    model: type[BaseModel] = Settings
    for index, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        elif index != len(parts) - 1:
            return None
    return parts


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("CASCADE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def load_with_env(path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(path)


def test_config_key_lookup_refuses_unknown_names() -> None:
    assert config_key("CASCADE_ROUTER__THRESHOLD") == ("router", "threshold")
    assert config_key("CASCADE_ROUTER__TRESHOLD") is None
    assert config_key("CASCADE_STUDENT") == ("student",)
    assert config_key("CASCADE_SERVER__PORT__X") is None


def test_configmap_config_loads_with_the_real_loader(
    rendered: Objects, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    for overlay in OVERLAYS:
        objects = rendered[overlay]
        configmaps = [
            o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("cascade-config")
        ]
        assert len(configmaps) == 1
        path = tmp_path / f"{overlay}.yaml"
        path.write_text(configmaps[0]["data"]["cascade.yaml"])
        deployment = find(objects, "Deployment", "cascade-gateway")
        env = container_env(pod_spec(deployment)["containers"][0])
        settings = load_with_env(path, {name: SECRET_VALUES[name] for name in env}, clean_env)
        assert settings.log_store.url == SECRET_VALUES["CASCADE_LOG_STORE__URL"]
        assert settings.student.api_key == "student-key" and settings.teacher.api_key == "teacher-key"
        assert settings.server.admin_key == SECRET_VALUES["CASCADE_SERVER__ADMIN_KEY"]
        check_k8s_against_settings(objects, settings, configmaps[0]["metadata"]["name"])
        job = pod_spec(find(objects, "CronJob", "cascade-distill"))["containers"][0]
        secrets = {name for name, entry in container_env(job).items() if "valueFrom" in entry}
        assert secrets == set(SECRET_VALUES)  # the job loads the same file and needs every secret too


def _port_of(container: dict[str, Any], name: str) -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(port)


def _flag(args: list[str], flag: str) -> str:
    (value,) = [arg.split("=", 1)[1] for arg in args if arg.startswith(f"{flag}=")]
    return value


LOG_DRAIN_S = 10.0  # two database writes of logstore.writer's 5 s timeout before the spool takes the rest


def shutdown_s(settings: Settings) -> float:
    """How long a gateway may take to stop once SIGTERM arrives, all of it spent keeping records."""
    return settings.server.shutdown_grace_s + settings.server.shadow_drain_s + LOG_DRAIN_S


def check_k8s_against_settings(objects: list[dict[str, Any]], settings: Settings, configmap: str) -> None:
    deployment = find(objects, "Deployment", "cascade-gateway")
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    assert settings.server.host == "0.0.0.0"
    assert _port_of(container, "http") == settings.server.port
    service = find(objects, "Service", "cascade-gateway")
    assert service["spec"]["ports"][0]["port"] == settings.server.port
    args = container["args"]
    assert args[args.index("--config") + 1] == CONFIG_PATH
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    config_volume = next(name for name, v in volumes.items() if v.get("configMap", {}).get("name") == configmap)
    assert f"{mounts[config_volume]}/cascade.yaml" == CONFIG_PATH
    assert settings.log_store.spool_dir in mounts.values()
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    assert spec["terminationGracePeriodSeconds"] >= float(pause[1]) + shutdown_s(settings)
    for tier, upstream in (("student", settings.student), ("teacher", settings.teacher)):
        server = find(objects, "Deployment", f"cascade-{tier}")
        (vllm,) = pod_spec(server)["containers"]
        svc = find(objects, "Service", f"cascade-{tier}")
        assert upstream.url == f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}/v1"
        assert _flag(vllm["args"], "--served-model-name") == upstream.model
        assert int(_flag(vllm["args"], "--port")) == _port_of(vllm, "http")
    teacher = pod_spec(find(objects, "Deployment", "cascade-teacher"))["containers"][0]
    assert int(_flag(teacher["args"], "--max-logprobs")) >= settings.teacher.log_top_logprobs
    job = pod_spec(find(objects, "CronJob", "cascade-distill"))
    job_args = job["containers"][0]["args"]
    assert job_args[job_args.index("--config") + 1] == CONFIG_PATH
    check_distill_paths(objects, settings)


def _mounts(spec: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """mountPath -> (claim name or "", the volume) of a pod's first container."""
    volumes = {v["name"]: v for v in spec["volumes"]}
    result = {}
    for mount in spec["containers"][0]["volumeMounts"]:
        volume = volumes[mount["name"]]
        result[mount["mountPath"]] = (volume.get("persistentVolumeClaim", {}).get("claimName", ""), volume)
    return result


def _service_url(objects: list[dict[str, Any]], name: str, scheme: str = "http") -> str:
    service = find(objects, "Service", name)
    return f"{scheme}://{name}:{service['spec']['ports'][0]['port']}"


def check_distill_paths(objects: list[dict[str, Any]], settings: Settings) -> None:
    """The distill section and the gateway's state file name paths and services that exist where used."""
    d = settings.distill
    gateway = pod_spec(find(objects, "Deployment", "cascade-gateway"))
    student = pod_spec(find(objects, "Deployment", "cascade-student"))
    job = pod_spec(find(objects, "CronJob", "cascade-distill"))
    job_mounts, student_mounts, gateway_mounts = _mounts(job), _mounts(student), _mounts(gateway)
    # The job writes adapters under registry_dir and hands vLLM that path: the student reads the same claim there.
    registry = str(d.registry_dir)
    assert job_mounts[registry][0] == student_mounts[registry][0] == "cascade-adapters"
    # State kept between nightly runs must be on a claim, not in the pod.
    assert job_mounts[str(d.work_dir)][0] == "cascade-distill-work"
    # The base model the job trains is the folder the student serves.
    assert str(d.base_model) == _flag(student["containers"][0]["args"], "--model")
    models = next(path for path, (claim, _) in job_mounts.items() if claim == "cascade-models")
    assert str(d.base_model).startswith(models + "/")
    assert d.lora_rank <= int(_flag(student["containers"][0]["args"], "--max-lora-rank"))
    assert d.gateway_admin_url == _service_url(objects, "cascade-gateway")
    assert d.pushgateway_url == _service_url(objects, "cascade-pushgateway")
    # Every replica reads the promoted student from one shared file.
    state_dir = str(Path(settings.server.state_file).parent)
    claim = gateway_mounts[state_dir][0]
    assert "ReadWriteMany" in find(objects, "PersistentVolumeClaim", claim)["spec"]["accessModes"]
    assert settings.auth.enabled is True
    assert settings.auth.redis_url == _service_url(objects, "cascade-redis", "redis") + "/0"


def test_gateway_paths_named_by_manifests_are_routes_of_the_app(rendered: Objects) -> None:
    routes = {getattr(route, "path", None) for route in api.routes}
    objects = rendered["gpu"]
    container = pod_spec(find(objects, "Deployment", "cascade-gateway"))["containers"][0]
    named = {container["readinessProbe"]["httpGet"]["path"], container["livenessProbe"]["httpGet"]["path"]}
    monitor = find(objects, "ServiceMonitor", "cascade-gateway")
    named |= {endpoint["path"] for endpoint in monitor["spec"]["endpoints"]}
    prometheus = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    (gateway_job,) = [job for job in prometheus["scrape_configs"] if job["job_name"] == "cascade-gateway"]
    named.add(gateway_job["metrics_path"])
    named |= set(re.findall(r"127\.0\.0\.1:\d+(/[a-z]+)", (DEPLOY / "docker" / "gateway.Dockerfile").read_text()))
    assert named == {"/readyz", "/healthz", "/metrics"}
    assert named <= routes


def _cascade_env_names() -> dict[str, str]:
    """Every CASCADE_* name in deploy/ (manifests, compose, env examples, units), with the file it is in."""
    names: dict[str, str] = {}
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.suffix in ("", ".yaml", ".yml", ".example", ".service", ".env"):
            for name in re.findall(r"\bCASCADE_[A-Z0-9_]+", path.read_text()):
                names.setdefault(name, str(path.relative_to(REPO)))
    for path in (COMPOSE / ".env.example",):
        for name in read_env_file(path):
            if name.startswith("CASCADE_"):
                names.setdefault(name, str(path.relative_to(REPO)))
    return names


def test_every_cascade_env_var_named_is_a_config_key() -> None:
    names = _cascade_env_names()
    assert {"CASCADE_LOG_STORE__URL", "CASCADE_STUDENT__API_KEY", "CASCADE_TEACHER__URL"} <= set(names)
    unknown = {name: where for name, where in names.items() if config_key(name) is None}
    assert not unknown, f"not config keys: {unknown}"


def test_compose_config_loads_with_the_gateway_environment(
    env_example: dict[str, str], clean_env: pytest.MonkeyPatch
) -> None:
    compose = load_compose("compose.yaml", env_example)
    gateway = compose["services"]["gateway"]
    env = {name: str(value) for name, value in gateway["environment"].items()}
    (config_mount,) = [v for v in gateway["volumes"] if v.endswith(f":{CONFIG_PATH}:ro")]
    host_path = (COMPOSE / config_mount.split(":")[0]).resolve()
    assert host_path == COMPOSE / "cascade.yaml"
    settings = load_with_env(host_path, env, clean_env)
    assert settings.log_store.url.startswith("postgresql+asyncpg://")
    assert settings.log_store.url.endswith("@postgres:5432/cascade")
    assert settings.server.host == "0.0.0.0"
    published = [p for p in gateway["ports"] if p.endswith(f":{settings.server.port}")]
    assert published, gateway["ports"]
    command = gateway["command"]
    assert command[command.index("--config") + 1] == CONFIG_PATH
    assert any(v.endswith(f":{settings.log_store.spool_dir}") for v in gateway["volumes"])
    for tier, upstream in (("student", settings.student), ("teacher", settings.teacher)):
        service = compose["services"][tier]
        assert upstream.url == f"http://{tier}:{_flag(service['command'], '--port')}/v1"
        assert _flag(service["command"], "--served-model-name") == upstream.model
    assert settings.auth.enabled is True and settings.auth.redis_url == "redis://redis:6379/0"
    assert float(gateway["stop_grace_period"].removesuffix("s")) >= shutdown_s(settings)
    assert "redis" in compose["services"]
    state_dir = str(Path(settings.server.state_file).parent)
    assert any(v.endswith(f":{state_dir}") and not v.startswith(".") for v in gateway["volumes"])

    distill = compose["services"]["distill"]
    job_env = {name: str(value) for name, value in distill["environment"].items()}
    clean_env.delenv("CASCADE_SERVER__ADMIN_KEY", raising=False)
    job = load_with_env(host_path, job_env, clean_env)
    d = job.distill
    assert str(d.base_model) == _flag(compose["services"]["student"]["command"], "--model")
    volumes = {v.split(":")[1]: v.split(":")[0] for v in distill["volumes"]}
    student_volumes = {v.split(":")[1]: v.split(":")[0] for v in compose["services"]["student"]["volumes"]}
    assert volumes[str(d.registry_dir)] == student_volumes[str(d.registry_dir)] == "adapters"
    assert volumes[str(d.work_dir)] in compose["volumes"]  # a named volume: kept between runs
    assert d.gateway_admin_url == "http://gateway:8000" and d.pushgateway_url == "http://pushgateway:9091"
    assert job.server.admin_key == settings.server.admin_key


def test_the_distill_commands_the_manifests_run_exist() -> None:
    from typer.testing import CliRunner

    from cascade.cli import app

    runner = CliRunner()
    for command in ("run", "rollback"):
        result = runner.invoke(app, ["distill", command, "--help"])
        assert result.exit_code == 0, result.output
        assert "--config" in result.output
