"""Property-based fuzzing of the gateway's own OpenAPI schema: no generated request may get a 5xx."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import GatewayFactory, Server, gateway_config


def test_a_thousand_generated_requests_get_no_server_error(
    start_gateway: GatewayFactory, fake_student: Server, fake_teacher: Server
) -> None:
    gateway = start_gateway(gateway_config(fake_student.url, fake_teacher.url))
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli is not None, "schemathesis is a dev dependency: pip install -e '.[dev]'"
    result = subprocess.run(
        [
            cli,
            "run",
            gateway.root + "/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "1000",
            "--seed",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert result.returncode == 0 and summary, result.stdout[-3000:]
    generated, passed = map(int, summary.groups())
    assert generated >= 1000 and passed == generated
