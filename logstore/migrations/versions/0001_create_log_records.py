"""Create the log_records table.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _tier(name: str) -> list[sa.Column]:
    return [
        sa.Column(f"{name}_model", sa.String(200)),
        sa.Column(f"{name}_text", sa.Text),
        sa.Column(f"{name}_tokens", sa.LargeBinary),
        sa.Column(f"{name}_prompt_tokens", sa.Integer),
        sa.Column(f"{name}_completion_tokens", sa.Integer),
        sa.Column(f"{name}_latency_s", sa.Float),
        sa.Column(f"{name}_finish_reason", sa.String(32)),
    ]


def upgrade() -> None:
    op.create_table(
        "log_records",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("caller_key_id", sa.String(128)),
        sa.Column("messages", _JSON),
        sa.Column("params", _JSON, nullable=False),
        sa.Column("redacted", sa.Boolean, nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("tier", sa.String(16)),
        sa.Column("signals", _JSON, nullable=False),
        sa.Column("shadow", sa.Boolean, nullable=False),
        sa.Column("stream", sa.Boolean, nullable=False),
        *_tier("student"),
        *_tier("teacher"),
        sa.Column("cost_usd", sa.Float),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("http_status", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("degraded", sa.String(64)),
        sa.Column("duration_s", sa.Float),
    )
    op.create_index("ix_log_records_ts", "log_records", ["ts"])


def downgrade() -> None:
    op.drop_index("ix_log_records_ts", table_name="log_records")
    op.drop_table("log_records")
