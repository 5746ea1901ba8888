"""installation: this database's own random id

`make run`'s private Redis keeps one folder of data per database id, so a new or another
database never shows the inboxes its user ids had in the last one.

Revision ID: b7d41e9c0a55
Revises: e5a7c1d3b9f2
Create Date: 2026-12-05 23:55:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = 'b7d41e9c0a55'
down_revision = 'e5a7c1d3b9f2'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'installation',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('token', sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sqlite_autoincrement=True,
    )


def downgrade():
    op.drop_table('installation')
