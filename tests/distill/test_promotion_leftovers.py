"""What a failed promotion leaves behind, and what a rollback gives back, against a loopback student server
(the fake speaks vLLM's adapter endpoints) and a real gateway's admin endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from distill.promote import PromotionError, Registry, Target, apply_threshold, promote, rollback
from tests.conftest import GatewayFactory, Server, free_port, gateway_config, start_fake, stop
from tests.distill.helpers import distill_settings

ADMIN_KEY = "admin-key-for-leftover-tests"
NAME = "tiny-student-distill-v0001"


@pytest.fixture
def student() -> Iterator[Server]:
    server = start_fake("tiny-student", "student")
    yield server
    stop(server.proc)


def adapter_calls(server: Server) -> list[list[str]]:
    calls: list[list[str]] = httpx.get(server.root + "/_stats").json()["adapter_calls"]
    return calls


def candidate(tmp_path: Path) -> Path:
    folder = tmp_path / "candidate"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    return folder


def test_a_failed_gateway_switch_unloads_the_adapter_it_loaded(student: Server, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = distill_settings(tmp_path, Path("unused"), student.url, hot_swap=True, gateway_admin_url=dead)
    registry = Registry(settings.distill.registry_dir)
    with pytest.raises(PromotionError, match="switching the gateway's student"):
        promote(registry, candidate(tmp_path), Target.of(settings), "lora", 5, {})
    assert adapter_calls(student) == [["load", NAME], ["unload", NAME]]  # the retry's name is free again
    assert registry.versions() == [] and registry.current() is None


def test_a_new_version_never_reuses_weights_left_under_its_name(student: Server, tmp_path: Path) -> None:
    httpx.post(student.root + "/_serve", json={"model": NAME})  # an earlier attempt's adapter, never unloaded
    settings = distill_settings(tmp_path, Path("unused"), student.url, hot_swap=True)
    version = promote(Registry(settings.distill.registry_dir), candidate(tmp_path), Target.of(settings), "lora", 5, {})
    assert version.model_name == NAME
    assert adapter_calls(student) == [["unload", NAME], ["load", NAME]]  # this version's files, loaded afresh


def test_rollback_gives_the_gateway_back_the_threshold_of_the_version_it_serves_again(
    student: Server, fake_teacher: Server, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    config = gateway_config(student.url, fake_teacher.url)
    config["student"]["model"] = "tiny-student"
    config["server"] = {"admin_key": ADMIN_KEY}
    gateway = start_gateway(config)

    def router_state() -> dict[str, object]:
        state = httpx.get(f"{gateway.root}/admin/state", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
        return {"student": state["student_model"], **state["router"]}

    settings = distill_settings(
        tmp_path,
        Path("unused"),
        student.url,
        hot_swap=True,
        gateway_admin_url=gateway.root,
        gateway_admin_key=ADMIN_KEY,
    )
    registry = Registry(settings.distill.registry_dir)
    version = promote(registry, candidate(tmp_path), Target.of(settings), "lora", 5, {})
    assert apply_threshold(registry, version, Target.of(settings), 0.8) == 0.5  # certified on its audit sample
    assert apply_threshold(registry, registry.get("v0001"), Target.of(settings), 0.85) == 0.8  # a later one
    assert router_state() == {"student": NAME, "signal": "mean_prob", "threshold": 0.85}
    manifest = registry.get("v0001").manifest
    assert manifest["threshold"] == 0.85 and manifest["threshold_before"] == 0.5  # what the base was served with

    rollback(registry, Target.of(settings))
    assert router_state() == {"student": "tiny-student", "signal": "mean_prob", "threshold": 0.5}
