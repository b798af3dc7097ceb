"""The built-in page in a real headless Chromium (Debian's, driven by Playwright) against a gateway serving
scripted traffic: the figures on screen are the ones /metrics gives, the charts are drawn, the recent cycle is
listed with its report, and with keys on the figures are refused without the admin key.

Set CASCADE_SCREENSHOTS_DIR to keep the page's and the report's screenshots there (docs/ holds them)."""

from __future__ import annotations

import io
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright
from prometheus_client.parser import text_string_to_metric_families

from distill.report import write_report
from tests.conftest import GatewayFactory, Server, gateway_config
from tests.distill.test_report import LOSSES, REPORT
from tests.gateway.test_metrics import STUDENT_PRICE, TEACHER_PRICE

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ADMIN_KEY = "page-admin-key-0123456789"
# The page's series colours (gateway/static/page.js): pixels of them mean a line was drawn, not just the axes.
STUDENT_RGB = (0x2E, 0x7D, 0x32)
TEACHER_RGB = (0xC6, 0x28, 0x28)
CASCADE_RGB = (0x15, 0x65, 0xC0)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("the page tests need Debian's chromium (make tools installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield browser
        browser.close()


def ask(gateway: Server, text: str, key: str | None = None) -> None:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": "cascade", "messages": [{"role": "user", "content": text}]}
    response = httpx.post(gateway.url + "/chat/completions", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text


def metric_figures(gateway: Server) -> dict[str, float]:
    """Requests, the teacher's share of the answered ones, and the savings, read from /metrics."""
    requests = cost = teacher_only = 0.0
    answered: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(gateway.root + "/metrics").text):
        for sample in family.samples:
            if sample.name == "cascade_requests_total":
                requests += sample.value
                if sample.labels["outcome"] == "ok":
                    tier = sample.labels["tier"]
                    answered[tier] = answered.get(tier, 0.0) + sample.value
            elif sample.name == "cascade_cost_usd_total":
                cost += sample.value
            elif sample.name == "cascade_teacher_only_cost_usd_total":
                teacher_only += sample.value
    share = answered.get("teacher", 0.0) / (answered.get("teacher", 0.0) + answered.get("student", 0.0))
    return {"requests": requests, "teacher_share": share, "savings_usd": teacher_only - cost, "cost_usd": cost}


def shown(page: Page, figure: str) -> str:
    return page.locator(f'[data-figure="{figure}"]').inner_text()


def as_number(text: str) -> float:
    value = float(text.replace("$", "").replace("%", "").replace(",", ""))
    return value / 100 if text.endswith("%") else value


def has_colour(png: bytes, rgb: tuple[int, int, int], tolerance: int = 40) -> int:
    """How many pixels are within ``tolerance`` of ``rgb`` in each channel."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return int((np.abs(pixels - np.array(rgb, dtype=np.int16)) <= tolerance).all(axis=-1).sum())


def keep(name: str, png: bytes) -> None:
    folder = os.environ.get("CASCADE_SCREENSHOTS_DIR")
    if folder:
        Path(folder, name).write_bytes(png)


def test_the_page_shows_the_metrics_figures_draws_its_charts_and_lists_the_cycles(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, browser: Browser, tmp_path: Path
) -> None:
    work = tmp_path / "distill"
    run_dir = work / "runs" / str(REPORT["run_id"])
    run_dir.mkdir(parents=True)
    write_report(run_dir, {**REPORT, "finished": "2026-12-04T01:02:00+00:00"}, LOSSES)
    config = gateway_config(fake_student.url, fake_teacher.url)
    config["server"] = {"page_sample_s": 0.5}
    config["distill"] = {"work_dir": str(work)}
    config["student"]["price"] = STUDENT_PRICE
    config["teacher"]["price"] = TEACHER_PRICE
    gateway = start_gateway(config, "--workers", "2")  # figures summed over workers, whichever one answers
    for wave, unsure in enumerate((1, 3, 2, 1)):  # waves a few samples apart: the charts get several intervals
        for i in range(6):
            ask(gateway, f"question {wave}.{i}" + (" student=unsure" if i < unsure else ""))
        time.sleep(1.2)

    page = browser.new_page(viewport={"width": 1280, "height": 1100})
    page.goto(gateway.root + "/ui")
    page.wait_for_selector("body[data-loaded]")
    expected = metric_figures(gateway)
    assert expected["requests"] == 24 and expected["teacher_share"] == pytest.approx(7 / 24)
    assert expected["savings_usd"] > 0
    for window in ("hour", "day"):
        assert as_number(shown(page, f"windows.{window}.requests")) == expected["requests"]
        assert as_number(shown(page, f"windows.{window}.teacher_share")) == pytest.approx(
            expected["teacher_share"], abs=0.0005
        )
        assert as_number(shown(page, f"windows.{window}.savings_usd")) == pytest.approx(
            expected["savings_usd"], rel=0.005
        )
        assert as_number(shown(page, f"windows.{window}.cost_usd")) == pytest.approx(expected["cost_usd"], rel=0.005)
    assert shown(page, "tiers.student.model") == config["student"]["model"]
    assert shown(page, "router.threshold") == str(config["router"]["threshold"])
    assert page.locator('[data-state="student"]').inner_text() == "ready"

    answers = page.locator("#chart-answers").screenshot()
    cost = page.locator("#chart-cost").screenshot()
    assert has_colour(answers, STUDENT_RGB) > 200 and has_colour(answers, TEACHER_RGB) > 200
    assert has_colour(cost, CASCADE_RGB) > 200

    cycle = page.locator(f'tr[data-run="{REPORT["run_id"]}"]')
    assert "promoted" in cycle.inner_text() and "81.3% / 70.0%" in cycle.inner_text()
    keep("page.png", page.screenshot(full_page=True))
    with page.expect_popup() as popup:
        cycle.locator("a").click()
    report = popup.value
    report.wait_for_load_state()
    assert report.locator('[data-figure="decision"]').inner_text() == "promoted"
    keep("report.png", report.screenshot(full_page=True))
    for run in ("%2E%2E", "nope"):  # the route's own guard: a run id is a plain name of a run with a report
        missing = httpx.get(f"{gateway.root}/ui/runs/{run}/report.html")
        assert missing.status_code == 404 and missing.json()["error"]["message"].startswith("no report for run")


def test_with_keys_on_the_page_is_behind_the_admin_key(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, browser: Browser
) -> None:
    config = gateway_config(fake_student.url, fake_teacher.url)
    config["auth"] = {"enabled": True}
    config["server"] = {"admin_key": ADMIN_KEY}
    gateway = start_gateway(config)
    refused = httpx.get(gateway.root + "/ui/data")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_admin_key"
    assert httpx.get(gateway.root + "/ui/data", headers={"authorization": "Bearer wrong"}).status_code == 401

    page = browser.new_page()
    page.goto(gateway.root + "/ui")
    page.wait_for_selector("#gate:not([hidden])")
    assert page.locator("#content").is_hidden()
    page.fill("#gate-key", ADMIN_KEY)
    page.click("#gate-form button")
    page.wait_for_selector("body[data-loaded]")
    assert shown(page, "windows.hour.requests") == "0"


def test_an_admin_key_guards_the_figures_and_reports_even_with_auth_off(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server, tmp_path: Path
) -> None:
    run_dir = tmp_path / "runs" / str(REPORT["run_id"])
    run_dir.mkdir(parents=True)
    write_report(run_dir, {**REPORT, "finished": "2026-12-04T01:02:00+00:00"}, LOSSES)
    config = gateway_config(fake_student.url, fake_teacher.url)
    config["server"] = {"admin_key": ADMIN_KEY}
    config["distill"] = {"work_dir": str(tmp_path)}
    gateway = start_gateway(config)
    report = f"{gateway.root}/ui/runs/{REPORT['run_id']}/report.html"
    assert httpx.get(gateway.root + "/ui/data").status_code == 401 and httpx.get(report).status_code == 401
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    assert httpx.get(report, headers=admin).text.startswith("<!doctype html>")
    assert httpx.get(gateway.root + "/ui").status_code == 200  # the shell holds no figures


def test_with_keys_on_and_no_admin_key_the_figures_are_off(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server
) -> None:
    config = gateway_config(fake_student.url, fake_teacher.url)
    config["auth"] = {"enabled": True}
    gateway = start_gateway(config)
    off = httpx.get(gateway.root + "/ui/data")
    assert off.status_code == 404 and "server.admin_key" in off.json()["error"]["message"]
    off_page = gateway_config(fake_student.url, fake_teacher.url)
    off_page["server"] = {"page": False}
    off_gateway = start_gateway(off_page)
    assert httpx.get(off_gateway.root + "/ui").status_code == 404
    assert httpx.get(off_gateway.root + "/ui/static/page.js").status_code == 404
