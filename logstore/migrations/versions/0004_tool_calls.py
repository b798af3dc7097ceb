"""Keep each tier's tool calls, and why its answer was not the tool call or JSON the request asked for.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_JSON = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
_TIERS = ("student", "teacher")


def upgrade() -> None:
    with op.batch_alter_table("log_records") as batch:
        for tier in _TIERS:
            batch.add_column(sa.Column(f"{tier}_tool_calls", _JSON))
            batch.add_column(sa.Column(f"{tier}_invalid", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("log_records") as batch:
        for tier in _TIERS:
            batch.drop_column(f"{tier}_invalid")
            batch.drop_column(f"{tier}_tool_calls")
