"""The distillation loss: cross-entropy on the teacher's tokens plus KL to the teacher's top-k distribution."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True, slots=True)
class LossParts:
    """The loss to back-propagate and its two terms (detached), for the progress bar and the report."""

    loss: torch.Tensor
    ce: float
    kd: float | None  # None: no position had teacher logprobs (black-box teacher, CE only)


def _tempered_log_buckets(log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """log of ``p ** (1 / T)`` renormalised over the buckets (last dim); zero-mass buckets stay at -inf."""
    return torch.log_softmax(log_probs / temperature, dim=-1)


def distillation_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_ids: torch.Tensor | None = None,
    teacher_logprobs: torch.Tensor | None = None,
    alpha: float = 0.5,
    temperature: float = 1.0,
) -> LossParts:
    """``alpha * CE + (1 - alpha) * T^2 * KL(teacher || student)`` over N answer positions.

    Args:
        logits: (N, V) the student's logits at the N positions that predict an answer token.
        targets: (N,) the teacher's token at each position (its answer, as text re-tokenised or as ids).
        teacher_ids: (N, K) the teacher's top-k token ids per position, or None (black-box teacher).
        teacher_logprobs: (N, K) their log-probabilities as the teacher served them (at temperature 1).
            A missing alternative is NaN or -inf; a row with none at all carries no KD signal (CE only there).
        alpha: weight of the cross-entropy term, in [0, 1]; 1 gives plain CE (SFT on the teacher's text).
        temperature: T > 0; both distributions are softened as ``p ** (1 / T)`` (renormalised) and the KL
            is scaled by ``T^2`` so its gradient keeps its size as T changes (Hinton et al., 2015).

    The KL is taken over K + 1 buckets at each position: the teacher's top-k tokens and one bucket for all
    the rest of the vocabulary. Teacher: ``p_j = exp(teacher_logprobs_j)``, rest ``1 - sum_j p_j`` (clipped
    at 0), renormalised. Student: its softmax probabilities of the same K ids and the remaining mass
    ``1 - sum_j s_j``. Both are then softened by T. The CE is the mean over all N positions; the KL is the
    mean over positions with teacher logprobs. Without any such position (or ``alpha == 1``) the loss is CE.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = logits.float()
    ce = F.cross_entropy(logits, targets)
    if teacher_ids is None or teacher_logprobs is None or alpha == 1.0:
        return LossParts(ce, float(ce.detach()), None)

    valid = torch.isfinite(teacher_logprobs)  # (N, K)
    rows = valid.any(dim=1)
    if not bool(rows.any()):
        return LossParts(ce, float(ce.detach()), None)
    logits, ids, valid = logits[rows], teacher_ids[rows].long(), valid[rows]
    t_lp = teacher_logprobs[rows].float().masked_fill(~valid, float("-inf"))

    # teacher buckets: top-k probabilities and the rest, renormalised (served logprobs may not sum to <= 1)
    t_top = t_lp.exp()
    t_rest = (1.0 - t_top.sum(dim=1, keepdim=True)).clamp_min(0.0)
    t_buckets = torch.cat([t_top, t_rest], dim=1)
    t_log = (t_buckets / t_buckets.sum(dim=1, keepdim=True)).log()

    # student buckets: the same ids from its full softmax, and the remaining mass
    s_all = torch.log_softmax(logits, dim=-1)
    s_top = s_all.gather(1, ids.clamp_min(0)).masked_fill(~valid, float("-inf"))
    s_top_mass = torch.logsumexp(s_top, dim=1, keepdim=True).clamp_max(0.0)
    s_rest = torch.log1p(-s_top_mass.exp().clamp_max(1.0 - 1e-7))  # log(1 - sum of the top-k)
    s_log = torch.cat([s_top, s_rest], dim=1)

    q_log = _tempered_log_buckets(t_log, temperature)
    p_log = _tempered_log_buckets(s_log, temperature)
    q = q_log.exp()
    # KL(q || p) = sum q (log q - log p); buckets where q = 0 contribute nothing (and may be -inf on both sides)
    per_position = torch.where(q > 0, q * (q_log - p_log), torch.zeros_like(q)).sum(dim=1)
    kd = per_position.mean() * temperature**2
    loss = alpha * ce + (1.0 - alpha) * kd
    return LossParts(loss, float(ce.detach()), float(kd.detach()))
