"""The escalation log store: one record per request through the cascade, in SQLite or PostgreSQL.

The log is the raw material of re-distillation, router calibration and cost reports. This package is its
own top level, next to ``gateway/``, ``router/`` and ``distill/``, because those readers (the nightly
re-distillation job, the router's calibration) must be able to import it without the HTTP stack: nothing
here imports ``gateway/``, FastAPI or aiohttp.

- :mod:`logstore.record`: :class:`LogRecord`, what one request leaves behind, and its compact per-token
  arrays (:class:`TokenLogprobs`).
- :mod:`logstore.schema` and :mod:`logstore.migrations`: the table and its Alembic migrations, applied by
  :func:`migrate` at start.
- :mod:`logstore.writer`: :class:`LogWriter`, the non-blocking batch writer with its crash-safe spool.
- :mod:`logstore.reader`: :func:`export` (JSONL / Parquet dataset) and :func:`stats`.

See docs/log-store.md for the schema, the durability guarantees and the measured write rates.
"""

from logstore.db import make_engine, migrate
from logstore.reader import Stats, export, iter_records, stats
from logstore.record import LogRecord, TierAnswer, TokenLogprobs, redact
from logstore.writer import LogWriter

__all__ = [
    "LogRecord",
    "LogWriter",
    "Stats",
    "TierAnswer",
    "TokenLogprobs",
    "export",
    "iter_records",
    "make_engine",
    "migrate",
    "redact",
    "stats",
]
