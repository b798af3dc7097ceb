"""Atomic file writes, the one way every package here replaces a file that others may be reading.

The content goes to a temporary file beside the target (same folder, so the same file system), which then
replaces the target in one ``os.replace``: a reader sees the old file or the new one, never half of one, and a
crash leaves at most a ``*.partial`` file behind. ``durable`` also fsyncs the content before the rename, for
files whose loss after a power cut matters (a promotion's manifest, the spool's read offset).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path, durable: bool = False) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; it replaces ``path`` when the block ends without
    an exception, and is removed when one is raised. Unique per process and thread: concurrent writers of
    one file never write into each other's temporary file (the last rename wins)."""
    partial = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.partial")
    try:
        yield partial
        if durable:
            with open(partial, "rb+") as written:
                os.fsync(written.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: str | bytes, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8) atomically; see :func:`atomic_path`."""
    with atomic_path(path, durable) as partial:
        partial.write_bytes(data.encode() if isinstance(data, str) else data)
