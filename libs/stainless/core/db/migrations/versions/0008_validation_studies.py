"""validation studies

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 12:05:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('study',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('vocabulary', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('classes', sa.JSON(), nullable=False),
    sa.Column('reference', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('slide_ids', sa.JSON(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('created_by', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('study_item',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('study_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('cell_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('stain_key', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
    sa.Column('reference_class', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('automatic_class', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('model_version', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.ForeignKeyConstraint(['cell_id'], ['cell.id'], ),
    sa.ForeignKeyConstraint(['study_id'], ['study.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('study_id', 'cell_id')
    )
    with op.batch_alter_table('study_item', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_study_item_study_id'), ['study_id'], unique=False)

    op.create_table('study_label',
    sa.Column('item_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('expert', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('study_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('label', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('labelled_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['study_item.id'], ),
    sa.ForeignKeyConstraint(['study_id'], ['study.id'], ),
    sa.PrimaryKeyConstraint('item_id', 'expert')
    )
    with op.batch_alter_table('study_label', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_study_label_study_id'), ['study_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('study_label', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_study_label_study_id'))

    op.drop_table('study_label')
    with op.batch_alter_table('study_item', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_study_item_study_id'))

    op.drop_table('study_item')
    op.drop_table('study')
