"""model version checkpoint hash

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 21:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('modelversion', schema=None) as batch_op:
        batch_op.add_column(sa.Column('checkpoint_sha256', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_modelversion_checkpoint_sha256', ['checkpoint_sha256'])


def downgrade() -> None:
    with op.batch_alter_table('modelversion', schema=None) as batch_op:
        batch_op.drop_index('ix_modelversion_checkpoint_sha256')
        batch_op.drop_column('checkpoint_sha256')
