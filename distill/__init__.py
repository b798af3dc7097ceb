"""The nightly re-distillation loop: what the teacher answered yesterday teaches the student tonight.

- :mod:`distill.dataset`: log records -> deduplicated examples (teacher answers, replay), held-out split,
  rendering with the student's chat template, teacher top-k logprobs kept for knowledge distillation.
- :mod:`distill.loss`: :func:`~distill.loss.distillation_loss`, CE on the teacher's tokens + T^2 * KL.
- :mod:`distill.train`: the Accelerate training loop (LoRA or full), checkpoints and resume.
- :mod:`distill.gate`: candidate vs serving student on held-out and regression sets; the decision.
- :mod:`distill.promote`: the versioned registry, vLLM hot swap, the gateway switch, rollback.
- :mod:`distill.report`: report.json / report.md / loss.png and Pushgateway metrics.
- :mod:`distill.cycle`: one locked, resumable cycle (``cascade distill run``).

Nothing here imports ``gateway/``. See docs/distillation.md.
"""
