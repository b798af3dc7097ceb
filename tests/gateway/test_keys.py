"""API keys and per-key limits, with counters in the real Redis."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from logstore import migrate
from logstore.keys import ApiKey, KeyStore, split_key
from tests.conftest import GatewayFactory, Server, gateway_config

REDIS_URL = "redis://127.0.0.1:6379/0"


class Keys:
    def __init__(self, url: str) -> None:
        self.url = url
        asyncio.run(migrate(url))

    def create(self, name: str, **limits: object) -> tuple[ApiKey, str]:
        async def run() -> tuple[ApiKey, str]:
            store = KeyStore(self.url)
            try:
                return await store.create(name, **limits)  # type: ignore[arg-type]
            finally:
                await store.close()

        return asyncio.run(run())

    def revoke(self, key_id: str) -> None:
        async def run() -> None:
            store = KeyStore(self.url)
            await store.revoke(key_id)
            await store.close()

        asyncio.run(run())


@pytest.fixture(scope="module")
def keyed(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Server, Keys, Path]:
    folder = tmp_path_factory.mktemp("keys")
    url = f"sqlite+aiosqlite:///{folder / 'log.db'}"
    keys = Keys(url)
    config = gateway_config(fake_student.url, fake_teacher.url)
    config["student"]["price"] = {"input_usd_per_mtok": 1000.0, "output_usd_per_mtok": 1000.0}
    config["auth"] = {"enabled": True, "redis_url": REDIS_URL, "key_cache_s": 0}
    config["log_store"] = {"url": url, "spool_dir": str(folder / "spool"), "flush_interval_s": 0.05}
    return start_gateway(config), keys, folder / "log.db"


def ask(gateway: Server, key: str | None, model: str = "cascade", text: str = "hello") -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return httpx.post(gateway.url + "/chat/completions", json=body, headers=headers, timeout=30)


def test_missing_bad_and_revoked_keys_are_401(keyed: tuple[Server, Keys, Path]) -> None:
    gateway, keys, _ = keyed
    assert ask(gateway, None).status_code == 401
    assert ask(gateway, "csk-nope-nope").json()["error"]["code"] == "invalid_api_key"
    key, plain = keys.create("team")
    assert ask(gateway, plain).status_code == 200
    assert ask(gateway, plain[:-1] + ("A" if plain[-1] != "A" else "B")).status_code == 401
    keys.revoke(key.id)
    assert ask(gateway, plain).status_code == 401
    assert plain not in ask(gateway, plain).text


def test_key_limited_to_models(keyed: tuple[Server, Keys, Path]) -> None:
    gateway, keys, _ = keyed
    _, plain = keys.create("cascade-only", models=["cascade"])
    assert ask(gateway, plain).status_code == 200
    denied = ask(gateway, plain, model="teacher-model")
    assert denied.status_code == 403 and denied.json()["error"]["param"] == "model"
    listed = httpx.get(gateway.url + "/models", headers={"authorization": f"Bearer {plain}"}).json()["data"]
    assert [model["id"] for model in listed] == ["cascade"]


def test_requests_per_minute_counted_in_redis(keyed: tuple[Server, Keys, Path]) -> None:
    gateway, keys, _ = keyed
    key, plain = keys.create("rpm", rpm=2)
    assert [ask(gateway, plain).status_code for _ in range(2)] == [200, 200]
    limited = ask(gateway, plain)
    assert limited.status_code == 429 and limited.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert redis.Redis.from_url(REDIS_URL).keys(f"cascade:rpm:{key.id}:*")


def test_budget_is_enforced_with_the_cost_model(keyed: tuple[Server, Keys, Path]) -> None:
    gateway, keys, _ = keyed
    # One request costs about 0.01 USD; its worst case (the ~80-byte body as prompt tokens) about 0.08.
    _, plain = keys.create("budget", budget_usd=0.2, budget_period="month")
    served = 0
    while ask(gateway, plain).status_code == 200:
        served += 1
        assert served < 50
    over = ask(gateway, plain)
    assert over.status_code == 429 and over.json()["error"]["code"] == "budget_exceeded"
    assert 5 <= served <= 20  # charged what the requests cost, not their worst case


def test_max_concurrent_requests(keyed: tuple[Server, Keys, Path], fake_teacher: Server) -> None:
    gateway, keys, _ = keyed
    _, plain = keys.create("one-at-a-time", max_concurrent=1)
    slow: list[int] = []
    thread = threading.Thread(
        target=lambda: slow.append(ask(gateway, plain, "teacher-model", "teacher=slow").status_code)
    )
    asked = len(httpx.get(fake_teacher.root + "/_stats").json()["received"])
    thread.start()
    try:
        while len(httpx.get(fake_teacher.root + "/_stats").json()["received"]) == asked:  # the slow one is in
            time.sleep(0.02)
        second = ask(gateway, plain)
        assert second.status_code == 429
    finally:
        thread.join()
    assert slow == [504]  # the slow request itself ran (and timed out upstream)
    statuses = [ask(gateway, plain).status_code for _ in range(20)]  # its slot is released just after it ends
    assert 200 in statuses


def test_log_records_carry_the_key_id_never_the_secret(keyed: tuple[Server, Keys, Path]) -> None:
    gateway, keys, database = keyed
    key, plain = keys.create("audited")
    assert ask(gateway, plain, text="audit me").status_code == 200
    parts = split_key(plain)  # the secret is URL-safe base64 and may itself contain "-"
    assert parts is not None
    secret = parts[1]
    for _ in range(50):
        with sqlite3.connect(database) as db:
            rows = db.execute(
                "SELECT caller_key_id, params FROM log_records WHERE caller_key_id = ?", (key.id,)
            ).fetchall()
        if rows:
            break
        threading.Event().wait(0.1)
    assert rows and all(secret not in str(row) for row in rows)
    with sqlite3.connect(database) as db:
        dump = "\n".join(db.iterdump())
    assert secret not in dump


def test_keys_cli_creates_lists_and_revokes(keyed: tuple[Server, Keys, Path]) -> None:
    import json
    import subprocess
    import sys

    gateway, keys, _ = keyed

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "cascade.cli", "keys", *args, "--url", keys.url]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    created = cli("create", "from-cli", "--model", "cascade", "--rpm", "100")
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert ask(gateway, key["key"]).status_code == 200
    listed = json.loads(cli("list").stdout)
    assert any(entry["id"] == key["id"] and "key" not in entry for entry in listed)
    parts = split_key(key["key"])
    assert parts is not None and parts[1] not in cli("list").stdout
    assert cli("revoke", key["id"]).returncode == 0
    assert ask(gateway, key["key"]).status_code == 401
    assert cli("revoke", key["id"]).returncode == 2
