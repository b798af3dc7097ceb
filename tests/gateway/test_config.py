"""A wrong configuration stops start-up with one clear line per mistake, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from cascade.config import ConfidenceSignal, ConfigError, load_settings
from tests.conftest import ROOT

GOOD = """
student: {url: "http://127.0.0.1:8001/v1", model: small}
teacher: {url: "http://127.0.0.1:8002/v1", model: big}
router: {signal: min_prob, threshold: 0.2}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cascade.yaml"
    path.write_text(text)
    return path


def test_file_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, GOOD)
    settings = load_settings(path)
    assert settings.alias == "cascade" and settings.router.signal == "min_prob"
    monkeypatch.setenv("CASCADE_ROUTER__THRESHOLD", "0.7")
    monkeypatch.setenv("CASCADE_TEACHER__URL", "http://teacher:9000/v1/")
    settings = load_settings(path)
    assert settings.router.threshold == 0.7
    assert settings.teacher.url == "http://teacher:9000/v1"
    assert settings.teacher.model == "big"  # the rest of the section still comes from the file
    assert load_settings(path, router={"threshold": 0.1}).router.threshold == 0.1


def test_every_mistake_gets_its_own_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
student: {url: "127.0.0.1:8001", model: small, read_timeout_s: -1}
teacher: {model: big}
router: {signal: vibes, threshold: 2}
colour: blue
""",
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    lines = info.value.lines
    assert any(line.startswith("student.url: must start with http://") for line in lines)
    assert any(line.startswith("student.read_timeout_s:") for line in lines)
    assert any(line.startswith("teacher.url: missing") and "CASCADE_TEACHER__URL" in line for line in lines)
    assert any(line.startswith("router.signal:") and "mean_prob" in line for line in lines)
    assert any(line.startswith("router.threshold:") for line in lines)
    assert any(line.startswith("colour: unknown key") for line in lines)
    assert len(lines) == 6


def test_names_must_differ(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("model: big", "model: small"))
    with pytest.raises(ConfigError, match="three different names"):
        load_settings(path)


def test_serve_with_a_bad_config_prints_lines_not_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "student: [not, a, mapping]\nteacher: {url: 'ftp://x/v1', model: t}\n")
    result = subprocess.run(
        [sys.executable, "-m", "cascade.cli", "serve", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "configuration is not valid" in result.stderr
    assert "teacher.url: must start with http:// or https://" in result.stderr


def test_no_secret_is_printed_with_a_mistake(tmp_path: Path) -> None:
    """The classic typo (the alias named like the student) must not print the keys and the database password."""
    path = write(
        tmp_path,
        """
alias: small
student: {url: "http://127.0.0.1:8001/v1", model: small, api_key: sk-student-SECRET}
teacher: {url: "http://127.0.0.1:8002/v1", model: big, api_key: sk-teacher-SECRET}
server: {admin_key: short-SECRET}
log_store: {url: "mysql://cascade:db-SECRET@db/cascade"}
auth: {redis_url: "redis://:redis-SECRET@127.0.0.1:6379/0"}
""",
    )
    result = subprocess.run(
        [sys.executable, "-m", "cascade.cli", "serve", "--config", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "server.admin_key: String should have at least 16 characters" in result.stderr
    assert "log_store.url: must start with sqlite+aiosqlite://" in result.stderr
    assert "mysql://cascade:***@db/cascade" in result.stderr  # the user still sees which URL is wrong
    assert "SECRET" not in result.stdout + result.stderr
    with pytest.raises(ConfigError) as info:
        load_settings(
            path, server={"admin_key": "a-long-enough-admin-SECRET"}, log_store={"url": "sqlite+aiosqlite:///x.db"}
        )
    assert info.value.lines == [
        "(top level): alias, student.model and teacher.model must be three different names, got "
        "['small', 'small', 'big']"
    ]


def test_missing_or_broken_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML at line 2"):
        load_settings(write(tmp_path, "student: {url: [\n"))


def test_the_example_config_loads() -> None:
    settings = load_settings(ROOT / "cascade.example.yaml")
    assert settings.teacher.log_top_logprobs == 20 and settings.student.price.gpu_usd_per_hour == 1.2


def test_the_old_name_of_the_mean_probability_says_what_to_write(tmp_path: Path) -> None:
    path = write(tmp_path, "router: {signal: mean_logprob, threshold: 0.5}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert any(line.startswith("router.signal:") and "write signal: mean_prob" in line for line in info.value.lines)


def test_the_signal_choices_are_the_routers_confidence_signals() -> None:
    from router.signals import CONFIDENCE_SIGNALS

    assert get_args(ConfidenceSignal) == CONFIDENCE_SIGNALS
