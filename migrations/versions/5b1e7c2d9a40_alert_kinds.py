"""alert kinds: crossings, moves over a window and channels, with cooldown and message

`target` keeps the level (a channel's low bound); `high` is a channel's upper bound,
`window_s` a move's window, `cooldown_s` the least time between a recurring alert's fires,
`message` the template of its notification. Existing rows get cooldown 0 and no message.
SQLite adds columns in place; dropping one rebuilds the table, which must keep
AUTOINCREMENT (see 4292979a0700).

Revision ID: 5b1e7c2d9a40
Revises: 4292979a0700
Create Date: 2026-12-04 09:00:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '5b1e7c2d9a40'
down_revision = '4292979a0700'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('high', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('window_s', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('cooldown_s', sa.Integer(), server_default='0',
                                      nullable=False))
        batch_op.add_column(sa.Column('message', sa.String(length=500), server_default='',
                                      nullable=False))


def downgrade():
    with op.batch_alter_table('alerts', schema=None,
                              table_kwargs={'sqlite_autoincrement': True}) as batch_op:
        batch_op.drop_column('message')
        batch_op.drop_column('cooldown_s')
        batch_op.drop_column('window_s')
        batch_op.drop_column('high')
