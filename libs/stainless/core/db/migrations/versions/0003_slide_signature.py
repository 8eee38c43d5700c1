"""slide signature

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 02:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('slide', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('signed_by', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True)
        )
        batch_op.add_column(sa.Column('signed_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('slide', schema=None) as batch_op:
        batch_op.drop_column('signed_at')
        batch_op.drop_column('signed_by')
