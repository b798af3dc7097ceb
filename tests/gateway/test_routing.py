"""Saved router artefacts in the gateway: a post-generation scorer, a pre-generation skip, hot reload."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from router.artefact import save_router
from router.policy import SignalRouter
from router.scorers import train_router
from tests.conftest import ROOT, GatewayFactory, Server, gateway_config
from tests.gateway.helpers import eventually, received

ADMIN_KEY = "admin-key-for-tests-0123456789"


def ask(gateway: Server, text: str) -> httpx.Response:
    body = {"model": "cascade", "messages": [{"role": "user", "content": text}]}
    return httpx.post(gateway.url + "/chat/completions", json=body, timeout=30)


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("routers")
    strict = save_router(SignalRouter("prob_q10", 0.99), root / "strict")  # the fake's -0.01 logprobs pass it
    impossible = save_router(SignalRouter("min_prob", 1.01), root / "impossible")  # nothing passes
    # A prompt router trained on "long prompts defeat the student" (prompt statistics only, no embedding).
    x = np.array([[np.log1p(n), np.log1p(n / 5), 0.0, 1.0] for n in range(5, 400, 5)])
    labels = (x[:, 0] < np.log1p(100)).astype(int)  # the student is right on prompts under 100 characters
    pre = train_router(
        x,
        labels,
        kind="pre_generation",
        feature_names=("prompt_log_chars", "prompt_log_words", "prompt_numbers", "prompt_lines"),
        threshold=0.5,
    )
    return {"strict": strict, "impossible": impossible, "pre": save_router(pre, root / "pre")}


def test_a_saved_scorer_replaces_the_signal(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, artefacts: dict[str, Path]
) -> None:
    config = gateway_config(fake_student.url, fake_teacher.url, scorer=str(artefacts["impossible"]))
    gateway = start_gateway(config)
    response = ask(gateway, "hello")  # confident by the default signal, refused by this artefact
    assert response.headers["x-cascade-tier"] == "teacher"
    assert 'component="router",version="' + str(artefacts["impossible"]) in httpx.get(gateway.root + "/metrics").text


def test_pre_router_sends_long_prompts_straight_to_the_teacher(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, artefacts: dict[str, Path]
) -> None:
    gateway = start_gateway(gateway_config(fake_student.url, fake_teacher.url, pre_router=str(artefacts["pre"])))
    before = received(fake_student)
    long = ask(gateway, "explain " + "in great detail " * 30)
    assert long.headers["x-cascade-tier"] == "teacher" and long.headers["x-cascade-confidence"] == "none"
    assert received(fake_student) == before  # the student was skipped
    short = ask(gateway, "hi")
    assert short.headers["x-cascade-tier"] == "student"
    assert 'cascade_decisions_total{reason="pre_routed"} 1.0' in httpx.get(gateway.root + "/metrics").text


def test_admin_reload_swaps_the_scorer_or_keeps_it(
    start_gateway: GatewayFactory,
    fake_student: Server,
    fake_teacher: Server,
    artefacts: dict[str, Path],
    tmp_path: Path,
) -> None:
    config = gateway_config(fake_student.url, fake_teacher.url, scorer=str(artefacts["strict"]))
    config["server"] = {"admin_key": ADMIN_KEY, "state_file": str(tmp_path / "state.json")}
    gateway = start_gateway(config, "--workers", "2")
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    assert ask(gateway, "hello").headers["x-cascade-tier"] == "student"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "router.json").write_text("{not json")
    refused = httpx.post(gateway.root + "/admin/router", json={"path": str(broken)}, headers=headers)
    assert refused.status_code == 400 and "the current one stays" in refused.json()["error"]["message"]
    wrong_kind = httpx.post(gateway.root + "/admin/router", json={"path": str(artefacts["pre"])}, headers=headers)
    assert wrong_kind.status_code == 400
    swapped = httpx.post(gateway.root + "/admin/router", json={"path": str(artefacts["impossible"])}, headers=headers)
    assert swapped.status_code == 200
    with httpx.Client(timeout=30) as http:
        body = {"model": "cascade", "messages": [{"role": "user", "content": "hello"}]}

        def every_worker_swapped() -> bool:  # the other worker follows through the state file
            tiers = {
                http.post(gateway.url + "/chat/completions", json=body, headers={"connection": "close"}).headers[
                    "x-cascade-tier"
                ]
                for _ in range(10)
            }
            return tiers == {"teacher"}

        eventually(every_worker_swapped, 10, "both workers escalating with the impossible router")


def test_a_missing_artefact_stops_start_up_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "cascade.yaml"
    config.write_text(
        "student: {url: 'http://127.0.0.1:1/v1', model: s}\nteacher: {url: 'http://127.0.0.1:1/v1', model: t}\n"
        f"router: {{scorer: '{tmp_path / 'nope'}'}}\nserver: {{state_file: '{tmp_path / 's.json'}'}}\n"
        f"log_store: {{url: 'sqlite+aiosqlite:///{tmp_path / 'l.db'}', spool_dir: '{tmp_path / 'spool'}'}}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "cascade.cli", "serve", "--config", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "router artefact" in result.stderr and "does not exist" in result.stderr
