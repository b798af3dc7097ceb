"""A real loopback HTTP server speaking the OpenAI chat protocol, with scripted behaviour.

It exists for what no real model does on demand: exact logprobs, failures, slowness, a death mid-stream.
The last user message scripts each tier: ``student=unsure teacher=die`` (role = the server's ``--role``).

Behaviours: ``confident`` (default; token logprob -0.01), ``unsure`` (token logprob -3.0), ``fail`` (HTTP 500),
``busy`` (HTTP 503), ``flaky`` (HTTP 503 with retry-after 0 on the first try of each prompt, then an answer),
``limited`` (HTTP 429 with retry-after 1), ``reject`` (HTTP 400: the prompt is longer than the context), ``refuse``
(HTTP 400 for a feature the server lacks, as vLLM without a tool-call parser), ``unauthorized`` (HTTP 401, an
expired key), ``forbidden`` (HTTP 403), ``slow`` (answers after 5 s), ``die`` (streams two tokens, then drops the
connection; a non-streamed request gets its connection dropped), ``hold`` (streams the whole answer, then waits
5 s before the usage chunk), ``garbage`` (a 200 that is not JSON).
Structured answers: ``call`` (a confident call of the request's first tool with ``{"city": "Paris"}``, its
tokens in Qwen2.5's hermes format), ``callmixed`` (the same call, confident on the values but unsure on the
JSON punctuation and keys around them), ``badcall`` (a confident call with ``{"city": 7}``), ``parallel`` (two
calls: Paris and Lyon), ``json`` (content ``{"name": "Ada", "age": 36}``), ``badjson`` (``"age": "36"``) and
``padjson`` (valid JSON padded with spaces and cut at ``max_tokens``, finish reason ``length``).
Judging (the prompt is :func:`router.judge.pairwise_prompt`'s, the script in the judged conversation): ``judge``
(a consistent judge: ``[[A]]`` or ``[[B]]`` for the answer that says "good", ``[[C]]`` when both or neither do),
``judgea`` (position-biased: always ``[[A]]``) and ``judgefail`` (a reply with no verdict).

Run: ``python -m tests.fake_upstream --port 9001 --model student-model --role student``.
``GET /_stats`` returns the requests it received and how many were cancelled by their client;
``POST /_serve {"model": NAME}`` makes it serve one more model name (as vLLM does for a loaded LoRA adapter);
``POST /v1/load_lora_adapter {"lora_name", "lora_path"}`` does the same as vLLM's endpoint (400 for a name it
serves already, 404 for a path that does not exist), ``POST /v1/unload_lora_adapter {"lora_name"}`` the reverse
(404 for a name it does not serve), both listed in ``/_stats`` as ``adapter_calls``; ``POST /_behave
{"behaviour": "limited"}`` gives every request that behaviour (an outage; ``null`` ends it);
``POST /_forget`` forgets every adapter (as a restarted vLLM does). With ``--api-key KEY`` every ``/v1``
route wants ``Authorization: Bearer KEY`` (401 otherwise), as vLLM's ``--api-key`` does.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

SLOW_S = 5.0
_SCRIPT = re.compile(r"(student|teacher)=(\w+)")
_CALLS = ("call", "callmixed", "badcall", "parallel")
_JSON = ("json", "badjson", "padjson")
_JUDGE_ANSWER = re.compile(
    r"\[The Start of Assistant ([AB])'s Answer\]\n(.*?)\n\[The End of Assistant \1's Answer\]", re.S
)


def _verdict(behaviour: str, prompt: str) -> str:
    if behaviour == "judgefail":
        return "Both answers have merits; I cannot decide."
    if behaviour == "judgea":
        return "Assistant A is better. [[A]]"
    good = [side for side, text in _JUDGE_ANSWER.findall(prompt) if "good" in text]
    return f"Verdict: [[{good[0] if len(good) == 1 else 'C'}]]"


@dataclass(frozen=True)
class Answer:
    tokens: list[str]
    logprobs: list[float]
    message: dict[str, Any]
    finish_reason: str


class FakeUpstream:
    def __init__(self, model: str, role: str) -> None:
        self.model = model
        self.served = [model]  # more are added by POST /_serve, as vLLM adds loaded LoRA adapters
        self.role = role
        self.received: list[dict[str, Any]] = []
        self.cancelled = 0
        self.cancelled_at: float | None = None  # time.time() of the last cancellation
        self.seen_prompts: set[str] = set()
        self.adapter_calls: list[list[str]] = []  # ["load" | "unload", name], in order
        self.override: str | None = None  # POST /_behave: one behaviour for every request (an outage)

    def behaviour(self, body: dict[str, Any]) -> str:
        if self.override:
            return self.override
        text = ""
        for message in body.get("messages", []):
            if message.get("role") == "user" and isinstance(message.get("content"), str):
                text = message["content"]
        for role, behaviour in _SCRIPT.findall(text):
            if role == self.role:
                return behaviour
        return "confident"

    def tokens(self) -> list[str]:
        return ["Answer", " from", f" {self.role}", "."]

    def answer(self, body: dict[str, Any], behaviour: str) -> Answer:
        """The scripted answer: its tokens with their logprobs, the message, the finish reason."""
        if behaviour in _CALLS:
            tools = body.get("tools") or [{"function": {"name": "none_offered"}}]
            name = tools[0]["function"]["name"]
            cities: list[Any] = {"badcall": [7], "parallel": ["Paris", "Lyon"]}.get(behaviour, ["Paris"])
            tokens, values, calls = [], [], []
            for i, city in enumerate(cities):
                arguments = orjson.dumps({"city": city}).decode()
                calls.append({"id": f"call_{self.role}_{i}", "type": "function",
                              "function": {"name": name, "arguments": arguments}})  # fmt: skip
                head = ["<tool_call>", "\n", '{"', "name", '":', ' "', name, '",', ' "', "arguments", '":', ' {"']
                tail = ["city", '":', *([' "', city, '"}}'] if isinstance(city, str) else [" ", str(city), "}}"])]
                values += [len(tokens) + 6, len(tokens) + len(head) + 3]  # the name and the city
                tokens += [*head, *tail, "\n", "</tool_call>"]
            unsure = -3.0 if behaviour == "callmixed" else -0.01
            logprobs = [-0.01 if i in values else unsure for i in range(len(tokens))]
            message = {"role": "assistant", "content": None, "tool_calls": calls}
            return Answer(tokens, logprobs, message, "tool_calls")
        if behaviour.startswith("judge"):
            text = _verdict(behaviour, str(body["messages"][-1].get("content", "")))
            words = text.split(" ")
            return Answer(words, [-0.01] * len(words), {"role": "assistant", "content": text}, "stop")
        if behaviour in _JSON:
            age = '"36"' if behaviour == "badjson" else "36"
            tokens = ['{"', "name", '":', ' "', "Ada", '",', ' "', "age", '":', " " + age, "}"]
            finish = "stop"
            if behaviour == "padjson":
                tokens, finish = [*tokens[:-1], *[" "] * 8], "length"
            logprobs = [-0.01] * len(tokens)
            return Answer(tokens, logprobs, {"role": "assistant", "content": "".join(tokens)}, finish)
        tokens = self.tokens()
        logprobs = [-3.0 if behaviour == "unsure" else -0.01] * len(tokens)
        return Answer(tokens, logprobs, {"role": "assistant", "content": "".join(tokens)}, "stop")

    def logprob_items(self, answer: Answer, top_k: int) -> list[dict[str, Any]]:
        items = []
        for token, logprob in zip(answer.tokens, answer.logprobs, strict=True):
            top = [{"token": token, "logprob": logprob, "bytes": None}]
            top += [{"token": f"alt{i}", "logprob": logprob - 1 - i, "bytes": None} for i in range(top_k - 1)]
            items.append({"token": token, "logprob": logprob, "bytes": None, "top_logprobs": top[:top_k]})
        return items

    def usage(self, body: dict[str, Any], answer: Answer) -> dict[str, int]:
        prompt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", [])) + 5
        completion = len(answer.tokens)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def models(self, request: web.Request) -> web.Response:
        data = [{"id": model, "object": "model", "created": 0, "owned_by": "fake"} for model in self.served]
        return web.json_response({"object": "list", "data": data})

    async def stats(self, request: web.Request) -> web.Response:
        stats = {
            "received": self.received,
            "cancelled": self.cancelled,
            "cancelled_at": self.cancelled_at,
            "adapter_calls": self.adapter_calls,
        }
        return web.json_response(stats)

    async def serve(self, request: web.Request) -> web.Response:
        self.served.append((await request.json())["model"])
        return web.json_response({})

    async def load_lora_adapter(self, request: web.Request) -> web.Response:
        body = await request.json()
        name, path = body.get("lora_name"), body.get("lora_path")
        if name in self.served:
            return web.json_response(
                {"error": {"message": f"The lora adapter '{name}' has already been loaded."}}, status=400
            )
        if not path or not Path(path).exists():
            return web.json_response({"error": {"message": f"No adapter found at {path}"}}, status=404)
        self.served.append(name)
        self.adapter_calls.append(["load", name])
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_lora_adapter(self, request: web.Request) -> web.Response:
        name = (await request.json()).get("lora_name")
        if name not in self.served or name == self.model:
            return web.json_response({"error": {"message": f"The lora adapter '{name}' cannot be found."}}, status=404)
        self.served.remove(name)
        self.adapter_calls.append(["unload", name])
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def behave(self, request: web.Request) -> web.Response:
        self.override = (await request.json()).get("behaviour")
        return web.json_response({"behaviour": self.override})

    async def forget(self, request: web.Request) -> web.Response:
        self.served = [self.model]
        return web.json_response({})

    async def reset(self, request: web.Request) -> web.Response:
        self.received.clear()
        self.cancelled = 0
        return web.json_response({})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        self.received.append(body)
        behaviour = self.behaviour(body)
        try:
            return await self._answer(request, body, behaviour)
        except asyncio.CancelledError:
            self.cancelled += 1
            self.cancelled_at = time.time()
            raise

    async def _answer(self, request: web.Request, body: dict[str, Any], behaviour: str) -> web.StreamResponse:
        if body.get("model") not in self.served:
            error = {"message": f"The model `{body.get('model')}` does not exist.", "type": "NotFoundError"}
            return web.json_response({"error": error}, status=404)
        if behaviour == "fail":
            return web.json_response({"error": {"message": "scripted failure", "type": "server_error"}}, status=500)
        if behaviour == "busy":
            return web.json_response({"error": {"message": "overloaded", "type": "server_error"}}, status=503)
        if behaviour == "flaky":
            prompt = orjson.dumps(body.get("messages")).decode()
            if prompt not in self.seen_prompts:
                self.seen_prompts.add(prompt)
                error = {"error": {"message": "warming up", "type": "server_error"}}
                return web.json_response(error, status=503, headers={"retry-after": "0"})
        if behaviour == "limited":
            error = {"error": {"message": "rate limited", "type": "rate_limit_error"}}
            return web.json_response(error, status=429, headers={"retry-after": "1"})
        if behaviour in ("unauthorized", "forbidden"):
            status = 401 if behaviour == "unauthorized" else 403
            return web.json_response({"error": {"message": "invalid api key", "type": "auth_error"}}, status=status)
        if behaviour == "reject":
            error = {"message": "This model's maximum context length is 10 tokens", "type": "BadRequestError"}
            return web.json_response({"error": error}, status=400)
        if behaviour == "refuse":
            message = '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
            error = {"message": message, "type": "BadRequestError"}
            return web.json_response({"error": error}, status=400)
        if behaviour == "garbage":
            return web.Response(body=b"<html>not json</html>", content_type="application/json")
        if behaviour == "slow":
            await asyncio.sleep(SLOW_S)
        top_k = int(body.get("top_logprobs") or 0)
        scripted = self.answer(body, behaviour)
        logprobs = self.logprob_items(scripted, top_k) if body.get("logprobs") else None
        if body.get("stream"):
            return await self._stream(request, body, behaviour, scripted, logprobs)
        if behaviour == "die":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        answer = {
            "id": f"chatcmpl-{self.role}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": scripted.message,
                    "logprobs": {"content": logprobs} if logprobs is not None else None,
                    "finish_reason": scripted.finish_reason,
                }
            ],
            "usage": self.usage(body, scripted),
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json")

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        behaviour: str,
        scripted: Answer,
        logprobs: list[dict[str, Any]] | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        base = {
            "id": f"chatcmpl-{self.role}",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": self.model,
        }

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            await response.write(b"data: " + orjson.dumps({**base, "choices": choices, **extra}) + b"\n\n")

        await send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for i, call in enumerate(scripted.message.get("tool_calls") or ()):  # as vLLM streams them
            head = {"index": i, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"]}}
            await send([{"index": 0, "delta": {"tool_calls": [head]}, "finish_reason": None}])
            arguments = call["function"]["arguments"]
            for start in range(0, len(arguments), 5):
                piece = {"index": i, "function": {"arguments": arguments[start : start + 5]}}
                await send([{"index": 0, "delta": {"tool_calls": [piece]}, "finish_reason": None}])
        for i, token in enumerate(scripted.tokens if not scripted.message.get("tool_calls") else ()):
            if behaviour == "die" and i == 2:
                assert request.transport is not None
                request.transport.abort()
                return response
            chunk_logprobs = {"content": [logprobs[i]]} if logprobs is not None else None
            await send([{"index": 0, "delta": {"content": token}, "logprobs": chunk_logprobs, "finish_reason": None}])
            await asyncio.sleep(0.01)
        await send([{"index": 0, "delta": {}, "finish_reason": scripted.finish_reason}])
        if behaviour == "hold":
            await asyncio.sleep(5)
        if (body.get("stream_options") or {}).get("include_usage"):
            await send([], usage=self.usage(body, scripted))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def make_app(model: str, role: str, api_key: str | None = None) -> web.Application:
    fake = FakeUpstream(model, role)

    @web.middleware
    async def require_key(request: web.Request, handler: Any) -> web.StreamResponse:
        if api_key and request.path.startswith("/v1") and request.headers.get("authorization") != f"Bearer {api_key}":
            return web.json_response({"error": "Unauthorized"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    app = web.Application(middlewares=[require_key])
    app.router.add_get("/v1/models", fake.models)
    app.router.add_post("/v1/chat/completions", fake.chat)
    app.router.add_post("/v1/load_lora_adapter", fake.load_lora_adapter)
    app.router.add_post("/v1/unload_lora_adapter", fake.unload_lora_adapter)
    app.router.add_post("/_forget", fake.forget)
    app.router.add_post("/_behave", fake.behave)
    app.router.add_get("/_stats", fake.stats)
    app.router.add_post("/_reset", fake.reset)
    app.router.add_post("/_serve", fake.serve)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--role", choices=["student", "teacher"], required=True)
    parser.add_argument("--api-key", default=None, help="Require this bearer key on /v1 routes")
    args = parser.parse_args()
    web.run_app(
        make_app(args.model, args.role, args.api_key),
        host="127.0.0.1",
        port=args.port,
        print=None,
        handler_cancellation=True,
    )


if __name__ == "__main__":
    main()
