"""Versioned folders (``v0001``, ``v0002``, ...) under one root, as the router artefacts and the student
registry keep them: one naming rule, numbers sorted as numbers (``v10000`` after ``v9999``), and a new
version staged beside its root and renamed into place whole, so a reader never sees half of one.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

VERSION_RE = re.compile(r"^v(\d{4,})$")


def is_version(name: str) -> bool:
    return VERSION_RE.match(name) is not None


def version_names(root: Path, complete: Callable[[Path], bool] = Path.is_dir) -> list[str]:
    """The version folders under ``root`` that ``complete`` accepts, oldest first."""
    if not root.is_dir():
        return []
    found = [p.name for p in root.iterdir() if p.is_dir() and is_version(p.name) and complete(p)]
    return sorted(found, key=lambda name: int(name[1:]))


def next_version(existing: list[str]) -> str:
    """The name after the newest of ``existing`` (oldest first, as :func:`version_names` gives them)."""
    return f"v{int(existing[-1][1:]) + 1 if existing else 1:04d}"


@contextmanager
def staged_version(root: Path, name: str) -> Iterator[Path]:
    """A staging path beside ``root / name`` (not yet created: make it, or copy a tree to it); renamed to
    ``root / name`` when the block ends, removed when it raises."""
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".{name}.staging"
    shutil.rmtree(staging, ignore_errors=True)  # left by a crash
    try:
        yield staging
        os.replace(staging, root / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
