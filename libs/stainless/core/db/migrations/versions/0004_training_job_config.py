"""training job config

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 03:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('trainingjob', schema=None) as batch_op:
        batch_op.add_column(sa.Column('config', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('model_version_id', sa.String(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('trainingjob', schema=None) as batch_op:
        batch_op.drop_column('model_version_id')
        batch_op.drop_column('config')
