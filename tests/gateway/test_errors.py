"""Every error answers in the OpenAI shape with the right status."""

from __future__ import annotations

import json
import socket
import time

import httpx
import openai
import pytest

from tests.conftest import GatewayFactory, Server, free_port, gateway_config
from tests.gateway.helpers import openai_client, post


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return error


def test_unknown_model_is_404(gateway: Server) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        openai_client(gateway).chat.completions.create(model="gpt-nonexistent", messages=ask("hi"))
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"


def nested(levels: int) -> bytes:
    """A value nested ``levels`` deep, as in an extra field no schema looks into."""
    return b'{"a": ' * levels + b"1" + b"}" * levels


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "cascade", "messages": []}', "messages"),
        (b'{"model": "cascade", "messages": [{"role": "wizard", "content": "hi"}]}', "messages.0.role"),
        (
            b'{"model": "cascade", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}',
            "temperature",
        ),
        (
            b'{"model": "cascade", "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 3}',
            "top_logprobs",
        ),
        (b'{"model": "cascade", "messages": [{"role": "user", "content": "hi"}], "n": 2}', "n"),
        (b'{"model": "cascade", "messages": [{"role": "user", "content": "hi"}], "x": ' + nested(400) + b"}", None),
        (
            b'{"model": "student-model", "messages": [{"role": "user", "content": "hi", "x": ' + nested(300) + b"}]}",
            None,
        ),
        (b'{"model": "cascade", "messages": [{"role": "user", "content": "hi"}], "x": ' + nested(5000) + b"}", None),
    ],
)
def test_bad_requests_are_400_never_422_or_500(gateway: Server, body: bytes, param: str | None) -> None:
    response = post(gateway, content=body, headers={"content-type": "application/json"})
    error = assert_openai_error(response, 400, param)
    assert error["type"] == "invalid_request_error"


def test_n_above_one_on_cascade_says_why(gateway: Server) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        openai_client(gateway).chat.completions.create(model="cascade", messages=ask("hi"), n=2)
    assert "pin a tier" in info.value.message


def test_body_too_large_is_413(gateway: Server) -> None:
    big = b'{"model": "cascade", "messages": [{"role": "user", "content": "' + b"x" * (5 * 1024 * 1024) + b'"}]}'
    assert_openai_error(post(gateway, content=big, headers={"content-type": "application/json"}), 413)


def test_unknown_route_is_404_in_openai_shape(gateway: Server) -> None:
    assert_openai_error(httpx.get(gateway.url + "/nothing-here"), 404)


@pytest.mark.parametrize(
    ("model", "script"), [("student-model", "student=reject"), ("cascade", "student=reject teacher=reject")]
)
def test_upstream_rejection_is_passed_on_as_400(gateway: Server, model: str, script: str) -> None:
    response = post(gateway, json={"model": model, "messages": ask(script)})
    error = assert_openai_error(response, 400, "messages")
    assert "maximum context length" in error["message"]


def test_a_request_the_student_refuses_goes_to_the_teacher_whose_refusal_is_the_clients(gateway: Server) -> None:
    """A student served without tool calling refuses what the teacher can answer; when both refuse, the
    client gets the teacher's 400."""
    answered = post(gateway, json={"model": "cascade", "messages": ask("student=refuse")})
    assert answered.status_code == 200 and answered.headers["x-cascade-tier"] == "teacher"
    refused = post(gateway, json={"model": "cascade", "messages": ask("student=refuse teacher=refuse")})
    assert "--tool-call-parser" in assert_openai_error(refused, 400)["message"]


def test_garbage_from_upstream_is_502(gateway: Server) -> None:
    response = post(gateway, json={"model": "student-model", "messages": ask("student=garbage")})
    assert_openai_error(response, 502)


def test_upstream_timeout_is_504(gateway: Server) -> None:
    response = post(gateway, json={"model": "teacher-model", "messages": ask("teacher=slow")})
    assert assert_openai_error(response, 504)["code"] == "upstream_timeout"


def test_busy_upstream_is_503(gateway: Server) -> None:
    response = post(gateway, json={"model": "teacher-model", "messages": ask("teacher=busy")})
    assert_openai_error(response, 503)


def test_student_down_falls_back_to_teacher(start_gateway: GatewayFactory, fake_teacher: Server) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    gateway = start_gateway(gateway_config(dead, fake_teacher.url))
    raw = openai_client(gateway).chat.completions.with_raw_response.create(model="cascade", messages=ask("hi"))
    assert raw.headers["x-cascade-tier"] == "teacher"
    assert raw.parse().choices[0].message.content == "Answer from teacher."
    metrics = httpx.get(gateway.root + "/metrics").text
    assert 'cascade_escalations_total{reason="student_down"} 1.0' in metrics
    # Pinned to the dead tier: 503; the alias can still be answered, so the gateway stays ready and says which
    # upstream is down.
    response = post(gateway, json={"model": "student-model", "messages": ask("hi")})
    assert_openai_error(response, 503)
    ready = httpx.get(gateway.root + "/readyz")
    assert ready.status_code == 200 and ready.json()["upstreams"] == {"student": "down", "teacher": "ready"}


def test_teacher_dying_mid_stream_ends_with_error_event_and_done(gateway: Server) -> None:
    body = {"model": "cascade", "messages": ask("student=unsure teacher=die"), "stream": True}
    with httpx.stream("POST", gateway.url + "/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert '"content":"Answer"' in events[1]
    assert '"error"' in events[-2]
    assert events[-1] == "data: [DONE]"


def test_openai_client_sees_mid_stream_failure(gateway: Server) -> None:
    stream = openai_client(gateway).chat.completions.create(
        model="cascade", messages=ask("student=unsure teacher=die"), stream=True
    )
    with pytest.raises(openai.APIError):
        list(stream)


def _stats(server: Server) -> dict:
    return httpx.get(server.root + "/_stats").json()


def _disconnect_after(gateway: Server, body: bytes, seconds: float) -> float:
    """Send a request, hang up after ``seconds``; returns when the connection was closed (time.time())."""
    port = int(gateway.root.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(head + body)
        time.sleep(seconds)
    return time.time()


@pytest.mark.parametrize("stream", [False, True])
def test_client_disconnect_cancels_the_upstream_request(gateway: Server, fake_teacher: Server, stream: bool) -> None:
    before = _stats(fake_teacher)["cancelled"]
    request = {"model": "teacher-model", "messages": [{"role": "user", "content": "teacher=slow"}], "stream": stream}
    body = json.dumps(request).encode()
    closed_at = _disconnect_after(gateway, body, 0.5)
    # Well before the gateway's own 2 s read timeout would close the upstream connection.
    deadline = time.monotonic() + 0.8
    while _stats(fake_teacher)["cancelled"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = _stats(fake_teacher)
    assert stats["cancelled"] == before + 1
    lag_ms = (stats["cancelled_at"] - closed_at) * 1000
    print(f"upstream request cancelled {lag_ms:.1f} ms after the client hung up")
    assert lag_ms < 100


def test_the_error_tree_lists_every_gateway_error_with_its_status() -> None:
    """gateway/errors.py's docstring is the one map of the gateway's errors: every class, with its status."""
    import gateway.admin
    import gateway.auth
    import gateway.errors
    import gateway.limits

    def tree(cls: type) -> list[type]:
        return [cls, *(c for sub in cls.__subclasses__() for c in tree(sub))]

    modules = (gateway.admin, gateway.auth, gateway.errors, gateway.limits)
    classes = [c for c in tree(gateway.errors.GatewayError)[1:] if any(c.__module__ == m.__name__ for m in modules)]
    doc = gateway.errors.__doc__ or ""
    branches = (line.strip().lstrip("│ ") for line in doc.splitlines())
    lines = {line.split()[1]: line for line in branches if line.startswith(("├──", "└──"))}
    for cls in classes:
        assert cls.__name__ in lines, f"{cls.__name__} is missing from gateway/errors.py's error tree"
        if cls.__name__ not in ("UpstreamError", "UpstreamBadResponse"):
            assert str(cls.status) in lines[cls.__name__], cls.__name__
