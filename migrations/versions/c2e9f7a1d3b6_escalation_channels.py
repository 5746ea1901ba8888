"""escalations.channels: the channels an insisting notification's alert named

They bound every round of its reminders, even once the alert is deleted.

Revision ID: c2e9f7a1d3b6
Revises: b7d41e9c0a55
Create Date: 2026-12-06 00:25:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = 'c2e9f7a1d3b6'
down_revision = 'b7d41e9c0a55'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('escalations') as batch_op:
        batch_op.add_column(sa.Column('channels', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('escalations') as batch_op:
        batch_op.drop_column('channels')
