"""statement_entries: the routed notifications monthly statements count

One row per notification and user, written by the router's slow steps beside the audit row
and the delivery plan; the inbox keeps 7 days, a statement covers a calendar month.

Revision ID: e5a7c1d3b9f2
Revises: 8d3f61a2c7e5
Create Date: 2026-12-04 15:00:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = 'e5a7c1d3b9f2'
down_revision = '8d3f61a2c7e5'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'statement_entries',
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('type', sa.String(length=40), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('data', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id', 'id'),
    )
    op.create_index('ix_statement_entries_created_at', 'statement_entries', ['created_at'])


def downgrade():
    op.drop_index('ix_statement_entries_created_at', table_name='statement_entries')
    op.drop_table('statement_entries')
