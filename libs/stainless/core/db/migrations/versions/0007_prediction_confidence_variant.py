"""prediction confidence variant

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 17:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('prediction', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                'confidence_variant',
                sqlmodel.sql.sqltypes.AutoString(length=32),
                nullable=True,
            )
        )


def downgrade() -> None:
    with op.batch_alter_table('prediction', schema=None) as batch_op:
        batch_op.drop_column('confidence_variant')
