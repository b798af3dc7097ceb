"""The cascade decision: which tier answers a chat request, and how.

``model: <alias>`` asks the student (always with logprobs, never streamed, so its whole answer can be judged),
scores the answer with the router and either returns it or escalates to the teacher. ``model: <student>`` or
``<teacher>`` pins a tier and passes the request straight through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from gateway import streaming
from gateway.errors import BadRequest, ModelNotFound, UpstreamBadResponse, UpstreamError
from gateway.protocol import ChatCompletionRequest, token_logprobs, trim_logprobs
from gateway.upstream import Upstream
from router import ThresholdRouter

STUDENT, TEACHER = "student", "teacher"


@dataclass(slots=True)
class Answer:
    """What the client gets: a whole body, or a stream of SSE bytes (exactly one is set)."""

    tier: str
    reason: str  # confident | not_confident | student_down | pinned
    confidence: float | None
    body: dict[str, Any] | None = None
    stream: AsyncIterator[bytes] | None = None
    replay_as_stream: bool = False
    include_usage: bool = False


class Cascade:
    def __init__(self, alias: str, student: Upstream, teacher: Upstream, router: ThresholdRouter, top_k: int):
        self.alias = alias
        self.student = student
        self.teacher = teacher
        self.router = router
        self.top_k = top_k
        self._pinned = {student.model: student, teacher.model: teacher}

    @property
    def model_names(self) -> list[str]:
        return [self.alias, self.student.model, self.teacher.model]

    async def answer(self, request: ChatCompletionRequest, data: dict[str, Any]) -> Answer:
        if request.model == self.alias:
            return await self._cascade(request, data)
        upstream = self._pinned.get(request.model)
        if upstream is None:
            raise ModelNotFound(
                f"model {request.model!r} does not exist; available: {', '.join(self.model_names)}",
                param="model",
            )
        return await self._forward(upstream, request, data, reason="pinned", confidence=None)

    async def _cascade(self, request: ChatCompletionRequest, data: dict[str, Any]) -> Answer:
        if request.n is not None and request.n > 1:
            raise BadRequest(
                f"n > 1 is not supported on the {self.alias!r} model (each choice could come from a different "
                f"tier); send n = 1, or pin a tier with model {self.student.model!r} or {self.teacher.model!r}",
                param="n",
            )
        client_top_k = (request.top_logprobs or 0) if request.logprobs else 0
        student_body = {
            **data,
            "model": self.student.model,
            "stream": False,
            "logprobs": True,
            "top_logprobs": max(self.top_k, client_top_k),
        }
        student_body.pop("stream_options", None)
        try:
            completion = await self.student.complete(student_body)
        except UpstreamError as exc:
            if isinstance(exc, UpstreamBadResponse) and exc.status < 500:
                raise  # the request's own fault: the teacher would refuse it too
            return await self._forward(self.teacher, request, data, reason="student_down", confidence=None)

        body = completion.body
        choice = body["choices"][0] if body["choices"] else {}
        decision = self.router.decide(token_logprobs(choice))
        if not decision.accept:
            return await self._forward(
                self.teacher, request, data, reason=decision.reason, confidence=decision.confidence
            )
        trim_logprobs(choice, bool(request.logprobs), client_top_k)
        body["model"] = self.student.model
        return Answer(
            STUDENT,
            decision.reason,
            decision.confidence,
            body=body,
            replay_as_stream=bool(request.stream),
            include_usage=bool(request.stream_options and request.stream_options.include_usage),
        )

    async def _forward(
        self,
        upstream: Upstream,
        request: ChatCompletionRequest,
        data: dict[str, Any],
        *,
        reason: str,
        confidence: float | None,
    ) -> Answer:
        body = data if data.get("model") == upstream.model else {**data, "model": upstream.model}
        if request.stream:
            response = await upstream.open_stream(body)
            return Answer(upstream.name, reason, confidence, stream=streaming.relay(upstream.iter_stream(response)))
        completion = await upstream.complete(body)
        return Answer(upstream.name, reason, confidence, body=completion.body)
