"""The distillation loss on small tensors, against a computation by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill.loss import distillation_loss

LOGITS = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.5, 0.5, 1.5, -0.5]])
TARGETS = torch.tensor([0, 2])
TEACHER_IDS = torch.tensor([[0, 1], [2, 3]])
TEACHER_LPS = torch.log(torch.tensor([[0.6, 0.3], [0.5, 0.2]]))


def by_hand(alpha: float, temperature: float) -> float:
    """The documented formula written out with plain floats, position by position."""
    ce_terms, kl_terms = [], []
    for row in range(2):
        z = LOGITS[row].tolist()
        norm = sum(math.exp(v) for v in z)
        s = [math.exp(v) / norm for v in z]
        ce_terms.append(-math.log(s[TARGETS[row]]))
        ids = TEACHER_IDS[row].tolist()
        p = [math.exp(v) for v in TEACHER_LPS[row].tolist()]
        teacher = [*p, 1 - sum(p)]
        student = [s[i] for i in ids] + [1 - sum(s[i] for i in ids)]
        q = [b ** (1 / temperature) for b in teacher]
        r = [b ** (1 / temperature) for b in student]
        q = [v / sum(q) for v in q]
        r = [v / sum(r) for v in r]
        kl_terms.append(sum(a * math.log(a / b) for a, b in zip(q, r, strict=True)))
    ce = sum(ce_terms) / 2
    kl = sum(kl_terms) / 2
    return alpha * ce + (1 - alpha) * temperature**2 * kl


@pytest.mark.parametrize(("alpha", "temperature"), [(0.5, 1.0), (0.3, 2.0), (0.0, 4.0)])
def test_matches_a_hand_computation(alpha: float, temperature: float) -> None:
    parts = distillation_loss(LOGITS, TARGETS, TEACHER_IDS, TEACHER_LPS, alpha, temperature)
    assert float(parts.loss) == pytest.approx(by_hand(alpha, temperature), rel=1e-5)
    assert parts.kd is not None and parts.kd > 0


def test_reduces_to_cross_entropy_when_alpha_is_one() -> None:
    expected = float(F.cross_entropy(LOGITS, TARGETS))
    with_teacher = distillation_loss(LOGITS, TARGETS, TEACHER_IDS, TEACHER_LPS, alpha=1.0, temperature=2.0)
    black_box = distillation_loss(LOGITS, TARGETS, None, None, alpha=0.2, temperature=2.0)
    assert float(with_teacher.loss) == pytest.approx(expected, rel=1e-6)
    assert float(black_box.loss) == pytest.approx(expected, rel=1e-6)
    assert black_box.kd is None


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_kl_term_is_zero_when_the_distributions_match(temperature: float) -> None:
    student_lps = torch.log_softmax(LOGITS, dim=-1)
    matching = student_lps.gather(1, TEACHER_IDS)
    parts = distillation_loss(LOGITS, TARGETS, TEACHER_IDS, matching, alpha=0.0, temperature=temperature)
    assert parts.kd == pytest.approx(0.0, abs=1e-6)
    assert float(parts.loss) == pytest.approx(0.0, abs=1e-6)


def test_missing_alternatives_and_positions_without_teacher_are_ignored() -> None:
    padded_ids = torch.tensor([[0, 1, 3], [2, 3, 0]])
    padded_lps = torch.cat([TEACHER_LPS, torch.full((2, 1), float("nan"))], dim=1)
    plain = distillation_loss(LOGITS, TARGETS, TEACHER_IDS, TEACHER_LPS, 0.5, 2.0)
    padded = distillation_loss(LOGITS, TARGETS, padded_ids, padded_lps, 0.5, 2.0)
    assert float(padded.loss) == pytest.approx(float(plain.loss), rel=1e-6)

    # the second position has no teacher logprobs: the KL is that of the first position alone
    only_first = TEACHER_LPS.clone()
    only_first[1] = float("nan")
    partial = distillation_loss(LOGITS, TARGETS, TEACHER_IDS, only_first, 0.0, 1.0)
    first = distillation_loss(LOGITS[:1], TARGETS[:1], TEACHER_IDS[:1], TEACHER_LPS[:1], 0.0, 1.0)
    assert partial.kd == pytest.approx(first.kd, rel=1e-6)


def test_gradient_moves_the_student_towards_the_teacher() -> None:
    logits = LOGITS.clone().requires_grad_(True)
    parts = distillation_loss(logits, TARGETS, TEACHER_IDS, TEACHER_LPS, 0.0, 1.0)
    parts.loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    stepped = (LOGITS - 0.5 * logits.grad).detach()
    after = distillation_loss(stepped, TARGETS, TEACHER_IDS, TEACHER_LPS, 0.0, 1.0)
    assert after.kd is not None and parts.kd is not None and after.kd < parts.kd


@pytest.mark.parametrize(("alpha", "temperature"), [(-0.1, 1.0), (1.5, 1.0), (0.5, 0.0)])
def test_rejects_out_of_range_settings(alpha: float, temperature: float) -> None:
    with pytest.raises(ValueError):
        distillation_loss(LOGITS, TARGETS, TEACHER_IDS, TEACHER_LPS, alpha, temperature)
