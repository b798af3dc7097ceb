"""The cascade decision: which tier answers a chat request, and how.

``model: <alias>`` asks the student (always with logprobs, never streamed, so its whole answer can be judged),
scores the answer with the router and either returns it or escalates to the teacher. ``model: <student>`` or
``<teacher>`` pins a tier and passes the request straight through. Everything that happens is written on the
request's :class:`~gateway.exchange.Exchange`.

When a tier cannot answer (see ``UpstreamError.upstream_fault``: down, timing out, 5xx, or refusing the gateway's
key, quota or model), the other one does: a failing student sends the alias to the teacher (``student_down``),
as does a prompt longer than the student's context (``student_context``) and a request the student refuses
with another 4xx (``student_refused``: a feature it is not served with, such as tool calling; if the request
itself is at fault the teacher refuses it too, and its error is the client's); a failing teacher on an escalation
leaves the student's answer, marked degraded (``router.on_teacher_down``). A student that lost its promoted
adapter (see :mod:`gateway.health`) is answered for per ``router.on_adapter_missing``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from cascade.terms import Reason, Tier
from gateway import streaming
from gateway.errors import BadRequest, ModelNotFound, UpstreamBadResponse, UpstreamError
from gateway.exchange import Exchange, TierCall
from gateway.health import Health
from gateway.protocol import ChatCompletionRequest, ClientAsk, trim_logprobs
from gateway.routing import Routing, check
from gateway.upstream import Completion, Upstream

STUDENT, TEACHER = Tier.STUDENT, Tier.TEACHER


@dataclass(slots=True)
class Answer:
    """What the client gets: a whole body (sent as JSON, or replayed as SSE) or a relayed stream."""

    body: dict[str, Any] | None = None
    stream: AsyncGenerator[bytes, None] | None = None
    replay_as_stream: bool = False
    include_usage: bool = False


class Cascade:
    def __init__(
        self,
        alias: str,
        student: Upstream,
        teacher: Upstream,
        routing: Routing,
        top_k: int,
        on_teacher_down: str = "degrade",
        health: Health | None = None,
    ) -> None:
        self.alias = alias
        self.student = student
        self.teacher = teacher
        self.routing = routing
        self.top_k = top_k
        self.on_teacher_down = on_teacher_down
        self.health = health or Health(student, teacher, "teacher")
        self._pinned = {student.model: student, teacher.model: teacher}

    def switch_student(self, model: str, lora_path: str | None = None) -> None:
        """Serve the student tier under another model name (a promoted LoRA adapter, read by the student server
        from ``lora_path``, so that it can be loaded again if the server forgets it); atomic for requests."""
        if model in (self.alias, self.teacher.model):
            raise BadRequest(f"{model!r} is already the alias or the teacher's name", param="model")
        self.student.model = model
        self.health.adapter.switch(model, lora_path)
        self._pinned = {model: self.student, self.teacher.model: self.teacher}

    @property
    def model_names(self) -> list[str]:
        return [self.alias, self.student.model, self.teacher.model]

    def worst_case_usd(self, request: ChatCompletionRequest, body_bytes: int) -> float:
        """The most a request can cost, held against a key's budget before it is sent: every tier that may be
        called, the body's size as the bound on prompt tokens (a token is at least one byte), and the completion
        bounded by max_tokens or the tier's cap (unbounded completions count only their prompt)."""
        tiers = [self.student, self.teacher] if request.model == self.alias else [self._pinned.get(request.model)]
        total = 0.0
        for upstream in tiers:
            if upstream is None:
                continue
            asked = request.max_completion_tokens or request.max_tokens or upstream.settings.max_tokens or 0
            total += upstream.settings.price.cost_usd(body_bytes, asked * (request.n or 1))
        return total

    async def answer(self, exchange: Exchange, request: ChatCompletionRequest, data: dict[str, Any]) -> Answer:
        ask = ClientAsk.of(request)
        if request.model == self.alias:
            _check_max_tokens(request, self.student, self.teacher)
            return await self._cascade(exchange, request, data, ask)
        upstream = self._pinned.get(request.model)
        if upstream is None:
            raise ModelNotFound(
                f"model {request.model!r} does not exist; available: {', '.join(self.model_names)}", param="model"
            )
        _check_max_tokens(request, upstream)
        exchange.reason = Reason.PINNED
        return await self._call(exchange, upstream, request, data, ask, pinned=True)

    async def _cascade(
        self, exchange: Exchange, request: ChatCompletionRequest, data: dict[str, Any], ask: ClientAsk
    ) -> Answer:
        if request.n is not None and request.n > 1:
            raise BadRequest(
                f"n > 1 is not supported on the {self.alias!r} model (each choice could come from a different "
                f"tier); send n = 1, or pin a tier with model {self.student.model!r} or {self.teacher.model!r}",
                param="n",
            )
        pre_score = await self.routing.skip_student(data)
        if pre_score is not None:  # clearly too hard for the student: straight to the teacher
            exchange.reason = Reason.PRE_ROUTED
            exchange.signals["pre_score"] = pre_score
            return await self._teacher(exchange, request, data, ask)
        completion = await self._ask_student(exchange, data, ask)
        if completion is None:  # the student cannot answer this request: the teacher does
            return await self._teacher(exchange, request, data, ask)
        assert exchange.student is not None
        judgement = self.routing.judge(data, exchange.student)
        exchange.reason, exchange.confidence = judgement.reason, judgement.confidence
        exchange.signals["confidence"] = judgement.confidence
        if not judgement.accept:
            try:
                return await self._teacher(exchange, request, data, ask)
            except UpstreamError as exc:
                if not exc.upstream_fault or self.on_teacher_down != "degrade":
                    raise
                assert exchange.teacher is not None
                exchange.teacher.error = exc.message
                exchange.degraded = "teacher-unavailable"
        exchange.tier = STUDENT
        assert exchange.student is not None
        return self._whole(completion.body, exchange.student.model, request, ask)

    async def _teacher(
        self, exchange: Exchange, request: ChatCompletionRequest, data: dict[str, Any], ask: ClientAsk
    ) -> Answer:
        """The teacher answers for the alias; a whole answer is checked like the student's, so that a tool
        call or JSON the request does not allow goes out flagged (``x-cascade-invalid``), never silently."""
        answer = await self._call(exchange, self.teacher, request, data, ask)
        if answer.body is not None and exchange.teacher is not None:
            check(data, exchange.teacher)
        return answer

    async def _ask_student(self, exchange: Exchange, data: dict[str, Any], ask: ClientAsk) -> Completion | None:
        """The student's whole answer with logprobs, or None (with ``exchange.reason`` set) when it cannot give
        one: it is down or refuses the gateway, it lost its adapter, or the prompt is too long for it."""
        adapter, model = self.health.adapter, self.student.model
        if adapter.missing:
            if self.health.on_adapter_missing == "teacher":
                call = exchange.student = TierCall(STUDENT, model, self.student.settings.price)
                call.error = f"the student server does not serve adapter {model!r} now; it is being re-loaded"
                exchange.reason = Reason.STUDENT_DOWN
                return None
            model = adapter.base_model
        body = self.student.body(data, model=model, stream=False, logprobs=True)
        body["top_logprobs"] = max(self.top_k, ask.top_logprobs)
        body.pop("stream_options", None)
        call = exchange.student = TierCall(STUDENT, model, self.student.settings.price)
        try:
            completion = await self.student.complete(body)
        except UpstreamError as exc:
            if isinstance(exc, UpstreamBadResponse) and exc.model_missing and model == adapter.name:
                self.health.adapter_lost()
                if self.health.on_adapter_missing == "base":
                    return await self._ask_student(exchange, data, ask)  # asks the base model now
            call.error = exc.message
            if isinstance(exc, UpstreamBadResponse) and exc.context_too_long:
                exchange.reason = Reason.STUDENT_CONTEXT
                return None
            exchange.reason = Reason.STUDENT_DOWN if exc.upstream_fault else Reason.STUDENT_REFUSED
            return None
        call.take_completion(completion.body, completion.latency_s)
        return completion

    async def _call(
        self,
        exchange: Exchange,
        upstream: Upstream,
        request: ChatCompletionRequest,
        data: dict[str, Any],
        ask: ClientAsk,
        pinned: bool = False,
    ) -> Answer:
        """Send the client's request to one tier, asking for what the log needs on top of what the client asked."""
        body = upstream.body(data)
        settings = upstream.settings
        if not pinned and settings.log_top_logprobs > ask.top_logprobs:
            body["logprobs"] = True
            body["top_logprobs"] = settings.log_top_logprobs
            if settings.token_ids and not ask.logprobs:
                body["return_tokens_as_token_ids"] = True
        call = TierCall(upstream.name, upstream.model, settings.price)
        if upstream.name == STUDENT:
            exchange.student = call
        else:
            exchange.teacher = call
        exchange.tier = upstream.name
        if request.stream:
            body["stream_options"] = {**(data.get("stream_options") or {}), "include_usage": True}
            response = await upstream.open_stream(body)
            prompt = exchange.student.prompt_tokens if exchange.student is not None else 0
            prompt = prompt or streaming.estimate_prompt_tokens(data.get("messages"))
            chunks = upstream.iter_stream(response)
            return Answer(stream=streaming.relay(chunks, call, ask, exchange.started, prompt))
        completion = await upstream.complete(body)
        call.take_completion(completion.body, completion.latency_s)
        return self._whole(completion.body, upstream.model, request, ask)

    @staticmethod
    def _whole(body: dict[str, Any], model: str, request: ChatCompletionRequest, ask: ClientAsk) -> Answer:
        for choice in body["choices"]:
            trim_logprobs(choice, ask.logprobs, ask.top_logprobs)
        body["model"] = model
        return Answer(body=body, replay_as_stream=bool(request.stream), include_usage=ask.usage_in_stream)


def _check_max_tokens(request: ChatCompletionRequest, *upstreams: Upstream) -> None:
    """400 when the request asks more tokens than a tier that may answer it allows."""
    asked = request.max_completion_tokens or request.max_tokens
    if asked is None:
        return
    for upstream in upstreams:
        cap = upstream.settings.max_tokens
        if cap is not None and asked > cap:
            field = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
            raise BadRequest(f"{field} is {asked}, above the limit of {cap} for {upstream.model!r}", param=field)
