"""The promotion gate: is the candidate better than the serving student?

Both students answer the held-out set (this window's teacher examples not trained on) and the fixed
regression set greedily, in-process with transformers (deterministic, no server needed). Each answer is
judged against its reference with an agreement function of :mod:`router.agreement`, and scored by the
router that is serving (:func:`serving_router`: the configured artefact, or the configured signal at the
serving student's threshold) from its own token logprobs and top-k alternatives, as the gateway would score
it, which gives the escalation rate that router would produce.

Decision: promote only if the candidate is better on the held-out set (agreement higher by more than
``min_gain``; or the same agreement with a lower escalation rate) and not worse on the regression set by
more than ``regression_tolerance``. Otherwise the serving student stays, and the reasons say why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from cascade.config import Settings
from cascade.logprobs import TokenLogprobs
from distill.dataset import EvalItem, prompt_ids
from router.agreement import answers_agree
from router.policy import RouteInput, Router, SignalRouter, accepts
from router.structured import check_answer, confidence_tokens, message_from_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(slots=True)
class GradedAnswer:
    """A student's greedy answer to one item: its tokens, the serving router's score, agreement with the reference."""

    text: str
    tokens: TokenLogprobs
    confidence: float
    agrees: bool
    escalated: bool  # the serving router would not accept it: not confident, or an invalid tool call


@dataclass(slots=True)
class EvalMetrics:
    """How one student did on one set: agreement with the references and the router's escalation rate."""

    n: int
    agreement: float | None  # None on an empty set
    escalation_rate: float | None
    mean_confidence: float | None
    answers: list[GradedAnswer] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key != "answers"}


def load_student(base_model: Path, version_path: Path | None, method: str) -> Any:
    """A student in eval mode: the base model, the base with a LoRA adapter, or a fully tuned model folder."""
    from transformers import AutoModelForCausalLM

    if version_path is not None and method == "full":
        return AutoModelForCausalLM.from_pretrained(version_path, dtype=torch.float32).eval()
    model: Any = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    if version_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, version_path)
    return model.eval()


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[list[dict[str, Any]]],
    max_new_tokens: int,
    batch_size: int,
    top_logprobs: int = 0,
    tools: Sequence[list[dict[str, Any]] | None] | None = None,
) -> list[tuple[str, TokenLogprobs]]:
    """Greedy answers with the logprob of each generated token (the end token included, as vLLM reports it)
    and the ``top_logprobs`` most likely alternatives at each position, as the router sees them from vLLM.
    ``tools[i]``: the tools prompt ``i`` offers, rendered by the chat template as the student is asked."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    offered = list(tools) if tools is not None else [None] * len(prompts)
    out: list[tuple[str, TokenLogprobs]] = []
    for start in range(0, len(prompts), batch_size):
        encoded = [
            prompt_ids(tokenizer, list(messages), offered[start + i])
            for i, messages in enumerate(prompts[start : start + batch_size])
        ]
        longest = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), longest), pad, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(encoded):  # left padding: every prompt ends where generation starts
            input_ids[row, longest - len(ids) :] = torch.tensor(ids)
            mask[row, longest - len(ids) :] = 1
        result = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            output_logits=True,  # the raw logits: logprobs as the server reports them, before any penalty
            return_dict_in_generate=True,
            pad_token_id=pad,
            eos_token_id=eos,
        )
        new_tokens = result.sequences[:, longest:]
        logprobs = torch.stack([torch.log_softmax(score.float(), dim=-1) for score in result.logits], dim=1)
        chosen = logprobs.gather(2, new_tokens[:, : logprobs.shape[1], None]).squeeze(2)
        top = logprobs.topk(top_logprobs, dim=-1).values if top_logprobs else logprobs[:, :, :0]
        for row in range(new_tokens.shape[0]):
            tokens = new_tokens[row].tolist()
            length = tokens.index(eos) + 1 if eos in tokens else len(tokens)
            if offered[start + row]:  # markup such as <tool_call> may be a special token: keep it, as vLLM does
                text = str(tokenizer.decode(tokens[:length])).removesuffix(str(tokenizer.eos_token or ""))
            else:
                text = str(tokenizer.decode(tokens[:length], skip_special_tokens=True))
            strings: list[str | int] = [str(tokenizer.decode([token])) for token in tokens[:length]]
            answer = TokenLogprobs(chosen[row, :length].numpy(), top[row, :length].numpy(), tokens=strings)
            out.append((text, answer))
    return out


def serving_router(settings: Settings, serving_threshold: float | None) -> Router:
    """The router the gateway serves with: the artefact at ``router.scorer`` when one is configured, else
    ``router.signal`` at ``serving_threshold`` (the one the serving student's promotion applied) or, when none
    was applied, ``router.threshold``."""
    if settings.router.scorer is not None:
        from router.artefact import load_router

        return load_router(Path(settings.router.scorer))
    threshold = settings.router.threshold if serving_threshold is None else serving_threshold
    return SignalRouter(settings.router.signal, threshold)


def _prompt(messages: Sequence[dict[str, Any]]) -> str:
    return next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")


def _message(item: EvalItem, text: str) -> dict[str, Any]:
    """The assistant message a raw answer is: its tool calls read as vLLM's ``hermes`` parser reads them when
    the item offers tools."""
    return message_from_text(text) if item.tools else {"role": "assistant", "content": text}


def grade(item: EvalItem, text: str, agree: Callable[[str, str], bool]) -> bool:
    """Does a student's raw answer agree with the item's reference? Where either side calls a tool, by
    tool-call agreement (same functions, equal arguments after normalisation, in any order); else by
    ``agree`` on the text."""
    return answers_agree(item.request, _message(item, text), item.reference_message, agree)


def evaluate(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[EvalItem],
    agree: Callable[[str, str], bool],
    router: Router,
    max_new_tokens: int,
    batch_size: int,
    top_logprobs: int = 0,
    structured_tokens: str = "decision",
) -> EvalMetrics:
    """Answer every item greedily; agreement with its reference; the share ``router`` would escalate, as the
    gateway judges it: an invalid tool call is escalated, a tool call's confidence is read from the tokens
    ``structured_tokens`` names (``router.structured_tokens``)."""
    if not items:
        return EvalMetrics(0, None, None, None)
    prompts = [item.messages for item in items]
    generated = generate(model, tokenizer, prompts, max_new_tokens, batch_size, top_logprobs, [i.tools for i in items])
    answers = []
    for item, (text, tokens) in zip(items, generated, strict=True):
        message = _message(item, text)
        scored = confidence_tokens(tokens, bool(message.get("tool_calls")), structured_tokens)
        confidence = router.score(RouteInput(prompt=_prompt(item.messages), answer=scored))
        valid = check_answer(item.request, message, None).valid if item.tools else True
        escalated = not valid or not accepts(confidence, router.threshold)
        agrees = answers_agree(item.request, message, item.reference_message, agree)
        answers.append(GradedAnswer(text, tokens, confidence, agrees, escalated))
    confidences = np.array([answer.confidence for answer in answers])
    return EvalMetrics(
        n=len(answers),
        agreement=float(np.mean([answer.agrees for answer in answers])),
        escalation_rate=float(np.mean([answer.escalated for answer in answers])),
        mean_confidence=float(confidences.mean()),
        answers=answers,
    )


@dataclass(frozen=True, slots=True)
class GateDecision:
    promote: bool
    reasons: list[str]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def should_promote(
    candidate: EvalMetrics,
    serving: EvalMetrics,
    candidate_regression: EvalMetrics | None,
    serving_regression: EvalMetrics | None,
    min_gain: float,
    tolerance: float,
) -> GateDecision:
    """Promote only if better on held-out and not worse beyond ``tolerance`` on the regression set."""
    reasons: list[str] = []
    if candidate.agreement is None or serving.agreement is None:
        return GateDecision(False, ["no held-out examples: nothing to compare"])
    held = (
        f"held-out agreement {_fmt(candidate.agreement)} vs serving {_fmt(serving.agreement)}, escalation "
        f"{_fmt(candidate.escalation_rate)} vs {_fmt(serving.escalation_rate)} (n={candidate.n})"
    )
    assert candidate.escalation_rate is not None and serving.escalation_rate is not None
    gained = candidate.agreement > serving.agreement + min_gain
    fewer_escalations = candidate.agreement >= serving.agreement and candidate.escalation_rate < serving.escalation_rate
    better = gained or fewer_escalations
    reasons.append(("better: " if better else "not better: ") + held)
    ok_regression = True
    if candidate_regression is not None and serving_regression is not None and candidate_regression.n:
        assert candidate_regression.agreement is not None and serving_regression.agreement is not None
        ok_regression = candidate_regression.agreement >= serving_regression.agreement - tolerance
        reasons.append(
            ("regression ok: " if ok_regression else "regression: ")
            + f"agreement {_fmt(candidate_regression.agreement)} vs serving {_fmt(serving_regression.agreement)}"
            + f" (tolerance {tolerance:.3f}, n={candidate_regression.n})"
        )
    else:
        reasons.append("no regression set configured (distill.regression_set)")
    return GateDecision(better and ok_regression, reasons)
