"""The gateway's view of the router: the post-generation decision and the optional pre-generation skip.

By default a :class:`~router.policy.SignalRouter`: one confidence signal and a threshold (``router.signal``,
``router.threshold``). A saved router artefact (``router.scorer``) replaces it; either decides through the one
rule of :mod:`router.policy`; a pre-generation artefact (``router.pre_router``) sends prompts
it scores below its threshold straight to the teacher, saving the student's latency. Artefacts sit in
validating slots: a reload that fails keeps the router in use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cascade.config import RouterSettings
from cascade.logprobs import TokenLogprobs
from cascade.terms import Reason
from gateway.exchange import TierCall
from router.errors import RouterLoadError
from router.policy import Judgement, RouteInput, Router, SignalRouter, accepts, decide
from router.structured import Verdict, check_answer, confidence_tokens, json_format

if TYPE_CHECKING:  # scikit-learn, skops and torch load only when an artefact is configured
    from router.artefact import RouterSlot

log = logging.getLogger("cascade.gateway")


def prompt_text(request: dict[str, Any]) -> str:
    """The text a prompt router reads: the last user message (text parts joined)."""
    for message in reversed(request.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


class Routing:
    def __init__(self, settings: RouterSettings, on_error: Callable[[], None] = lambda: None) -> None:
        self.signal = SignalRouter(settings.signal, settings.threshold)
        self.scorer: RouterSlot | None = None
        self.pre: RouterSlot | None = None
        self.on_error = on_error  # counts failures in the metrics
        self.structured_tokens = settings.structured_tokens
        self._paths = (settings.scorer, settings.pre_router)

    def load(self) -> None:
        """Load the configured artefacts at start-up; raises RouterLoadError naming what is wrong."""
        scorer, pre = self._paths
        if scorer is not None:
            self.scorer = _slot(scorer, "post")
        if pre is not None:
            self.pre = _slot(pre, "pre")

    def set_threshold(self, threshold: float) -> None:
        """A new threshold for the configured signal (e.g. recalibrated after a promotion); atomic."""
        self.signal = SignalRouter(self.signal.feature, threshold)

    @property
    def router(self) -> Router:
        """The router that is serving: the artefact when one is loaded, else the configured signal."""
        return self.scorer.router if self.scorer is not None else self.signal

    @property
    def version(self) -> str:
        post = str(self.scorer.source) if self.scorer else f"{self.signal.feature}@{self.signal.threshold}"
        return post + (f"+pre:{self.pre.source}" if self.pre else "")

    async def skip_student(self, request: dict[str, Any]) -> float | None:
        """The pre-router's score when it sends the prompt straight to the teacher, else None."""
        if self.pre is None:
            return None
        router = self.pre.router
        try:
            score = await asyncio.to_thread(router.score, RouteInput(prompt=prompt_text(request)))
        except Exception:
            self.on_error()
            log.exception("the pre-generation router failed; asking the student")
            return None
        return None if accepts(score, router.threshold) else score

    def judge(self, request: dict[str, Any], call: TierCall) -> Judgement:
        """Accept or escalate the student's answer: a tool call or JSON the request does not allow is escalated
        (``call.invalid`` says why); otherwise its confidence decides, read from the tokens that carry the
        decision when the answer is structured and ``router.structured_tokens`` is ``decision``."""
        verdict = check(request, call)
        tokens = self._confidence_tokens(request, call)
        known = call.features if tokens is call.tokens else None  # the log record keeps these
        try:
            judgement = decide(self.router, RouteInput(prompt_text(request), tokens, answer_features=known))
        except Exception:
            self.on_error()
            log.exception("the router failed on a request; escalating it")
            judgement = Judgement(0.0, Reason.NOT_CONFIDENT)
        if verdict.reason is not None:
            return Judgement(judgement.confidence, verdict.reason)
        return judgement

    def _confidence_tokens(self, request: dict[str, Any], call: TierCall) -> TokenLogprobs:
        structured = call.tool_calls is not None or json_format(request) is not None
        return confidence_tokens(call.tokens, structured, self.structured_tokens)

    async def reload(self, which: str, path: str) -> str:
        """Load, validate and warm the artefact at ``path``, then swap it in (atomic for requests)."""
        slot = await asyncio.to_thread(_slot, path, which)
        if which == "post":
            self.scorer = slot
        else:
            self.pre = slot
        return str(slot.source)


def check(request: dict[str, Any], call: TierCall) -> Verdict:
    """Check a tier's answer against the request's tools and response_format (kept on ``call.verdict``)."""
    call.verdict = check_answer(request, call.message, call.finish_reason)
    return call.verdict


def _slot(path: str, which: str) -> RouterSlot:
    from router.artefact import RouterSlot, load_router

    if not Path(path).exists():
        raise RouterLoadError(f"router artefact {path} does not exist (save one with `cascade router ...`)")
    router = load_router(Path(path))
    if (which == "pre") != (router.kind == "pre_generation"):
        expected = "a pre_generation router" if which == "pre" else "a signal or post_hoc router"
        raise RouterLoadError(f"{path}: is a {router.kind} router; {expected} is expected here")
    warm_up = getattr(router, "warm_up", None)
    if warm_up is not None:
        warm_up()  # loads the prompt embedder now, not on the first request
    return RouterSlot(router, Path(path))
