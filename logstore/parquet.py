"""The Parquet form of the export (needs pyarrow: ``pip install 'cascade-gateway[parquet]'``).

The same fields as the JSON-lines export with fixed Arrow types; two differences, because Parquet columns
need one type: ``messages``, ``params`` and the answers' ``tool_calls`` are JSON-encoded strings, and token
ids (when a server reports ids rather than strings) are written as their decimal strings.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

_ANSWER = pa.struct(
    [
        ("model", pa.string()),
        ("text", pa.string()),
        ("tool_calls", pa.string()),
        ("invalid", pa.string()),
        ("tokens", pa.list_(pa.string())),
        ("logprobs", pa.list_(pa.float32())),
        ("top_tokens", pa.list_(pa.list_(pa.string()))),
        ("top_logprobs", pa.list_(pa.list_(pa.float32()))),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("latency_s", pa.float64()),
        ("finish_reason", pa.string()),
    ]
)

SCHEMA = pa.schema(
    [
        ("schema_version", pa.int32()),
        ("request_id", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("caller_key_id", pa.string()),
        ("client_request_id", pa.string()),
        ("messages", pa.string()),
        ("params", pa.string()),
        ("redacted", pa.bool_()),
        ("decision", pa.string()),
        ("reason", pa.string()),
        ("tier", pa.string()),
        ("signals", pa.map_(pa.string(), pa.float64())),
        ("shadow", pa.bool_()),
        ("stream", pa.bool_()),
        ("student", _ANSWER),
        ("teacher", _ANSWER),
        ("cost_usd", pa.float64()),
        ("status", pa.string()),
        ("http_status", pa.int32()),
        ("error", pa.string()),
        ("degraded", pa.string()),
        ("duration_s", pa.float64()),
    ]
)


def _strings(tokens: list[Any] | None) -> list[str] | None:
    return None if tokens is None else [str(token) for token in tokens]


def _answer(answer: dict[str, Any] | None) -> dict[str, Any] | None:
    if answer is None:
        return None
    top = answer["top_tokens"]
    return {
        **answer,
        "tool_calls": None if answer["tool_calls"] is None else orjson.dumps(answer["tool_calls"]).decode(),
        "tokens": _strings(answer["tokens"]),
        "top_tokens": None if top is None else [_strings(row) for row in top],
    }


def _row(record: dict[str, Any]) -> dict[str, Any]:
    return {
        **record,
        "time": datetime.fromisoformat(record["time"]),
        "messages": None if record["messages"] is None else orjson.dumps(record["messages"]).decode(),
        "params": orjson.dumps(record["params"]).decode(),
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
