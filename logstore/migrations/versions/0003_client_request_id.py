"""Key records on the gateway's own request id; keep the client's x-request-id beside it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("log_records") as batch:
        batch.add_column(sa.Column("client_request_id", sa.String(128)))
        batch.create_index("ix_log_records_client_request_id", ["client_request_id"])


def downgrade() -> None:
    with op.batch_alter_table("log_records") as batch:
        batch.drop_index("ix_log_records_client_request_id")
        batch.drop_column("client_request_id")
