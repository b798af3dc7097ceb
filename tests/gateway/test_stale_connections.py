"""In process, against a real TCP server on loopback: a pooled connection the server closes as it is reused
(uvicorn's 5 s idle timeout meeting the gateway's pool) is retried on a new one, never a 503 to the client."""

from __future__ import annotations

import asyncio

import orjson

from cascade.config import UpstreamSettings
from gateway.upstream import Upstream

ANSWER = orjson.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]})


async def read_request(reader: asyncio.StreamReader) -> bool:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
    )
    await reader.readexactly(length)
    return True


async def closes_on_second_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answers the first request of a connection with keep-alive; takes the second and closes unanswered."""
    await read_request(reader)
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: keep-alive\r\n"
        + f"content-length: {len(ANSWER)}\r\n\r\n".encode()
        + ANSWER
    )
    await writer.drain()
    await read_request(reader)
    writer.close()


def test_a_reused_connection_the_server_closed_is_retried_on_a_new_one() -> None:
    async def main() -> tuple[int, int]:
        connections = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            await closes_on_second_request(reader, writer)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        upstream = Upstream("student", UpstreamSettings(url=f"http://127.0.0.1:{port}/v1", model="m", retries=2))
        await upstream.start()
        try:
            answers = 0
            for _ in range(3):
                completion = await upstream.complete({"model": "m", "messages": [{"role": "user", "content": "x"}]})
                answers += completion.body["choices"][0]["message"]["content"] == "hi"
        finally:
            await upstream.close()
            server.close()
            await server.wait_closed()
        return answers, connections

    answers, connections = asyncio.run(main())
    assert answers == 3  # each time the pooled connection was dropped, a new one answered
    assert connections == 3


def test_idle_connections_are_let_go_before_the_servers_idle_timeout() -> None:
    settings = UpstreamSettings(url="http://127.0.0.1:9/v1", model="m")
    assert settings.keepalive_s < 5.0  # vLLM's uvicorn closes idle connections after 5 s

    async def main() -> float:
        upstream = Upstream("student", settings)
        await upstream.start()
        try:
            return float(upstream.session.connector._keepalive_timeout)  # type: ignore[union-attr]
        finally:
            await upstream.close()

    assert asyncio.run(main()) == settings.keepalive_s
