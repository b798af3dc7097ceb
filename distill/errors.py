"""The one error of the re-distillation job."""

from __future__ import annotations


class DistillError(RuntimeError):
    """The cycle cannot go on; the message says why. The command exits non-zero."""
