"""The Kubernetes manifests render with kustomize and pass the Kubernetes schemas, offline."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy import prometheusrule
from tests.deploy.conftest import K8S, KUBERNETES_VERSION, OVERLAYS, container_env, find, pod_spec

SCHEMAS = Path(__file__).parent / "schemas"
CRD_SCHEMAS = {
    "ServiceMonitor": SCHEMAS / "servicemonitor.json",
    "PrometheusRule": SCHEMAS / "prometheusrule.json",
}
Objects = dict[str, list[dict[str, Any]]]


def validate(obj: dict[str, Any]) -> None:
    if obj["kind"] in CRD_SCHEMAS:
        jsonschema.validate(obj, json.loads(CRD_SCHEMAS[obj["kind"]].read_text()))
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_passes_its_schema(rendered: Objects, overlay: str) -> None:
    objects = rendered[overlay]
    assert len(objects) >= 20
    for obj in objects:
        try:
            validate(obj)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            pytest.fail(f"{overlay}: {obj['kind']}/{obj['metadata']['name']} at {list(exc.path)}: {exc.message}")


def test_validation_refuses_a_misspelt_field(rendered: Objects) -> None:
    deployment = copy.deepcopy(find(rendered["gpu"], "Deployment", "cascade-gateway"))
    pod_spec(deployment)["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/readyz", "port": 8000}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    monitor = copy.deepcopy(find(rendered["gpu"], "ServiceMonitor", "cascade-gateway"))
    monitor["spec"]["endpoints"][0]["pathh"] = "/metrics"
    with pytest.raises(jsonschema.ValidationError):
        validate(monitor)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_objects_are_namespaced_and_uniquely_named(rendered: Objects, overlay: str) -> None:
    seen = set()
    for obj in rendered[overlay]:
        key = (obj["kind"], obj["metadata"]["name"])
        assert key not in seen, f"{overlay}: {key} twice"
        seen.add(key)
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "cascade", key


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_is_pinned(rendered: Objects, overlay: str) -> None:
    for obj in rendered[overlay]:
        if obj["kind"] not in ("Deployment", "CronJob"):
            continue
        for container in pod_spec(obj)["containers"] + pod_spec(obj).get("initContainers", []):
            image = container["image"]
            name, _, tag = image.rpartition(":")
            pinned = "@sha256:" in image or (name and "/" not in tag and tag not in ("", "latest"))
            assert pinned, f"{overlay}: {obj['metadata']['name']} runs unpinned image {image}"


def test_gateway_deployment_is_production_shaped(rendered: Objects) -> None:
    objects = rendered["gpu"]
    deployment = find(objects, "Deployment", "cascade-gateway")
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert {"/etc/cascade", "/tmp", "/var/lib/cascade/spool"} <= mounts  # writable paths on a read-only root
    hpa = find(objects, "HorizontalPodAutoscaler", "cascade-gateway")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cascade-gateway"}
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = find(objects, "PodDisruptionBudget", "cascade-gateway")
    labels = spec_labels(deployment)
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def spec_labels(obj: dict[str, Any]) -> dict[str, str]:
    template = obj["spec"]["jobTemplate"]["spec"]["template"] if obj["kind"] == "CronJob" else obj["spec"]["template"]
    labels: dict[str, str] = template["metadata"]["labels"]
    return labels


def test_model_servers_request_gpus_only_in_the_gpu_overlay(rendered: Objects) -> None:
    for name in ("cascade-student", "cascade-teacher"):
        gpu = pod_spec(find(rendered["gpu"], "Deployment", name))
        cpu = pod_spec(find(rendered["cpu"], "Deployment", name))
        assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert any(t["key"] == "nvidia.com/gpu" for t in gpu["tolerations"])
        assert "nvidia.com/gpu" not in json.dumps(cpu["containers"][0]["resources"])
        assert "--gpu-memory-utilization=0.90" not in cpu["containers"][0]["args"]
    job_gpu = pod_spec(find(rendered["gpu"], "CronJob", "cascade-distill"))["containers"][0]
    job_cpu = pod_spec(find(rendered["cpu"], "CronJob", "cascade-distill"))["containers"][0]
    assert job_gpu["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in json.dumps(job_cpu["resources"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_student_loads_lora_at_runtime_from_the_pvc_the_job_writes(rendered: Objects, overlay: str) -> None:
    objects = rendered[overlay]
    student = pod_spec(find(objects, "Deployment", "cascade-student"))
    job = pod_spec(find(objects, "CronJob", "cascade-distill"))
    (vllm,) = student["containers"]
    assert "--enable-lora" in vllm["args"] and "--max-lora-rank=64" in vllm["args"]
    assert container_env(vllm)["VLLM_ALLOW_RUNTIME_LORA_UPDATING"]["value"] == "True"

    def adapter_mount(spec: dict[str, Any]) -> tuple[str, str, bool]:
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v
        }
        for mount in spec["containers"][0]["volumeMounts"]:
            if claims.get(mount["name"]) == "cascade-adapters":
                return mount["mountPath"], claims[mount["name"]], bool(mount.get("readOnly"))
        raise AssertionError("no cascade-adapters mount")

    student_path, claim, student_ro = adapter_mount(student)
    job_path, job_claim, job_ro = adapter_mount(job)
    # The job hands the student a path: it must mean the same folder in both pods.
    assert (student_path, claim) == (job_path, job_claim)
    assert student_ro and not job_ro
    pvc = find(objects, "PersistentVolumeClaim", "cascade-adapters")
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]


def test_nightly_job_is_bounded_and_single(rendered: Objects) -> None:
    cron = find(rendered["gpu"], "CronJob", "cascade-distill")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] > 0
    assert spec["jobTemplate"]["spec"]["activeDeadlineSeconds"] > 0
    assert spec["successfulJobsHistoryLimit"] >= 1 and spec["failedJobsHistoryLimit"] >= 1
    (container,) = pod_spec(cron)["containers"]
    assert container["args"][:2] == ["distill", "run"]
    assert spec["schedule"].split()[2:] == ["*", "*", "*"]  # daily: CascadeRedistillationStale waits 36 h


def _allows(policy: dict[str, Any], pod_labels: dict[str, str], namespace_labels: dict[str, str], port: int) -> bool:
    for rule in policy["spec"].get("ingress", []):
        ports = [p["port"] for p in rule.get("ports", [])]
        if ports and port not in ports:
            continue
        peers = rule.get("from")
        if peers is None:
            return True
        for peer in peers:
            if "namespaceSelector" in peer:
                wanted = peer["namespaceSelector"].get("matchLabels", {})
                if wanted.items() <= namespace_labels.items():
                    return True
            elif (
                "podSelector" in peer
                and namespace_labels.get("kubernetes.io/metadata.name") == "cascade"
                and peer["podSelector"].get("matchLabels", {}).items() <= pod_labels.items()
            ):
                return True
    return False


def reachable(
    objects: list[dict[str, Any]], target: dict[str, str], source: dict[str, str], ns: str, port: int
) -> bool:
    """Whether the namespace's NetworkPolicies let a pod (labels, namespace) reach the target pod's port."""
    namespace_labels = {"kubernetes.io/metadata.name": ns}
    policies = [
        obj
        for obj in objects
        if obj["kind"] == "NetworkPolicy"
        and obj["spec"]["podSelector"].get("matchLabels", {}).items() <= target.items()
        and "Ingress" in obj["spec"]["policyTypes"]
    ]
    assert policies, f"no policy selects {target}"
    return any(_allows(policy, source, namespace_labels, port) for policy in policies)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_and_the_job_reach_the_model_servers(rendered: Objects, overlay: str) -> None:
    objects = rendered[overlay]
    gateway = spec_labels(find(objects, "Deployment", "cascade-gateway"))
    job = spec_labels(find(objects, "CronJob", "cascade-distill"))
    pushgateway = spec_labels(find(objects, "Deployment", "cascade-pushgateway"))
    for name in ("cascade-student", "cascade-teacher"):
        server = spec_labels(find(objects, "Deployment", name))
        assert reachable(objects, server, gateway, "cascade", 8000)
        assert reachable(objects, server, job, "cascade", 8000)
        assert reachable(objects, server, {}, "monitoring", 8000)  # Prometheus scrapes /metrics
        assert not reachable(objects, server, pushgateway, "cascade", 8000)
        assert not reachable(objects, server, gateway, "other", 8000)
        assert not reachable(objects, server, {"app.kubernetes.io/name": "cascade-gateway"}, "other", 8000)
    assert reachable(objects, gateway, {}, "other", 8000)  # clients reach the gateway
    assert reachable(objects, gateway, job, "cascade", 8000)  # the job switches the gateway's student
    redis = spec_labels(find(objects, "Deployment", "cascade-redis"))
    assert reachable(objects, redis, gateway, "cascade", 6379)
    assert not reachable(objects, redis, job, "cascade", 6379)
    assert reachable(objects, pushgateway, job, "cascade", 9091)
    assert not reachable(objects, pushgateway, gateway, "cascade", 9091)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_monitors_select_existing_pods_and_ports(rendered: Objects, overlay: str) -> None:
    objects = rendered[overlay]
    workloads = [obj for obj in objects if obj["kind"] == "Deployment"]
    services = [obj for obj in objects if obj["kind"] == "Service"]
    for service in services:
        selected = [w for w in workloads if service["spec"]["selector"].items() <= spec_labels(w).items()]
        assert selected, f"Service {service['metadata']['name']} selects no pod"
        for workload in selected:
            names = {p.get("name") for c in pod_spec(workload)["containers"] for p in c.get("ports", [])}
            for port in service["spec"]["ports"]:
                assert port["targetPort"] in names, (service["metadata"]["name"], port)
    for monitor in (obj for obj in objects if obj["kind"] == "ServiceMonitor"):
        wanted = monitor["spec"]["selector"]["matchLabels"]
        matched = [s for s in services if wanted.items() <= s["metadata"].get("labels", {}).items()]
        assert matched, f"ServiceMonitor {monitor['metadata']['name']} selects no Service"
        for service in matched:
            port_names = {p["name"] for p in service["spec"]["ports"]}
            assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names


def test_prometheus_rule_is_generated_from_the_alert_rules() -> None:
    committed = (K8S / "base" / "prometheusrule.yaml").read_text()
    assert committed == prometheusrule.render(), "regenerate: python -m tests.deploy.prometheusrule"
    names = [r.get("alert") for g in yaml.safe_load(committed)["spec"]["groups"] for r in g["rules"]]
    assert "CascadeRedistillationStale" in names


def test_a_single_gateway_replica_can_still_be_drained(rendered: Objects) -> None:
    objects = rendered["cpu"]
    hpa = find(objects, "HorizontalPodAutoscaler", "cascade-gateway")
    pdb = find(objects, "PodDisruptionBudget", "cascade-gateway")
    assert find(objects, "Deployment", "cascade-gateway")["spec"]["replicas"] == hpa["spec"]["minReplicas"] == 1
    assert "minAvailable" not in pdb["spec"] and pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_limit_counters_survive_a_redis_restart(rendered: Objects, overlay: str) -> None:
    """Budgets live in Redis: an append-only file on a claimed volume, never evicted."""
    objects = rendered[overlay]
    redis = find(objects, "Deployment", "cascade-redis")
    spec = pod_spec(redis)
    args = spec["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    [data] = [volume for volume in spec["volumes"] if volume["name"] == "data"]
    claim = data["persistentVolumeClaim"]["claimName"]
    assert find(objects, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert redis["spec"]["strategy"]["type"] == "Recreate"  # one writer of the file at a time


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_spool_outlives_the_gateway_pods(rendered: Objects, overlay: str) -> None:
    """Records spooled while PostgreSQL is away must survive a rollout: a shared claim, not an emptyDir."""
    objects = rendered[overlay]
    spec = pod_spec(find(objects, "Deployment", "cascade-gateway"))
    [spool] = [volume for volume in spec["volumes"] if volume["name"] == "spool"]
    claim = find(objects, "PersistentVolumeClaim", spool["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every replica's workers lock their own slot in it
