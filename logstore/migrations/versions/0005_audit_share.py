"""Keep the share each request's audit draw was compared with (log_store.shadow_share), so calibration can
take the same uniform sample the gateway shadowed.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("log_records") as batch:
        batch.add_column(sa.Column("audit_share", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("log_records") as batch:
        batch.drop_column("audit_share")
