"""The Parquet form of the export (needs pyarrow: ``pip install 'cascade-gateway[parquet]'``).

The same fields as the JSON-lines export, with Arrow types derived from the log table's columns
(:mod:`logstore.schema`); two differences, because Parquet columns need one type: ``messages``, ``params``
and the answers' ``tool_calls`` are JSON-encoded strings, and token ids (when a server reports ids rather
than strings) are written as their decimal strings.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from logstore.record import LogRecord, TierAnswer
from logstore.schema import JSON_FIELDS, log_records

_TOKENS = [
    ("tokens", pa.list_(pa.string())),
    ("logprobs", pa.list_(pa.float32())),
    ("top_tokens", pa.list_(pa.list_(pa.string()))),
    ("top_logprobs", pa.list_(pa.list_(pa.float32()))),
]


def _arrow(column: str) -> pa.DataType:
    """The Arrow type of a log column (JSON values are written JSON-encoded)."""
    kind = log_records.columns[column].type
    if isinstance(kind, sa.JSON | sa.String):
        return pa.string()
    if isinstance(kind, sa.Boolean):
        return pa.bool_()
    if isinstance(kind, sa.Integer):
        return pa.int64()
    if isinstance(kind, sa.Float):
        return pa.float64()
    raise TypeError(f"log column {column}: no Arrow type for {kind!r}")


_ANSWER = pa.struct(
    [(f.name, _arrow(f"student_{f.name}")) for f in fields(TierAnswer) if f.name != "logprobs"] + _TOKENS
)
_SPECIAL = {
    "time": pa.timestamp("us", tz="UTC"),
    "signals": pa.map_(pa.string(), pa.float64()),
    "student": _ANSWER,
    "teacher": _ANSWER,
}
SCHEMA = pa.schema(
    [("schema_version", pa.int32())] + [(f.name, _SPECIAL.get(f.name) or _arrow(f.name)) for f in fields(LogRecord)]
)
_ENCODED = JSON_FIELDS - {"signals"}  # the record's and the answers' JSON values, written as JSON text


def _encoded(values: dict[str, Any]) -> dict[str, Any]:
    return {
        name: orjson.dumps(value).decode() if name in _ENCODED and value is not None else value
        for name, value in values.items()
    }


def _strings(tokens: list[Any] | None) -> list[str] | None:
    return None if tokens is None else [str(token) for token in tokens]


def _answer(answer: dict[str, Any] | None) -> dict[str, Any] | None:
    if answer is None:
        return None
    top = answer["top_tokens"]
    return {
        **_encoded(answer),
        "tokens": _strings(answer["tokens"]),
        "top_tokens": None if top is None else [_strings(row) for row in top],
    }


def _row(record: dict[str, Any]) -> dict[str, Any]:
    return {
        **_encoded(record),
        "time": datetime.fromisoformat(record["time"]),
        "signals": list(record["signals"].items()),
        "student": _answer(record["student"]),
        "teacher": _answer(record["teacher"]),
    }


class Writer:
    """Writes export dicts (:meth:`LogRecord.to_export_dict`) to a Parquet file, one row group per call."""

    def __init__(self, path: Path) -> None:
        self._writer = pq.ParquetWriter(path, SCHEMA, compression="zstd")

    def write(self, records: list[dict[str, Any]]) -> None:
        if records:
            table = pa.Table.from_pylist([_row(record) for record in records], schema=SCHEMA)
            self._writer.write_table(table)

    def __enter__(self) -> Writer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._writer.close()
