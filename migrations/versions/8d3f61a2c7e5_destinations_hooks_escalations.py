"""destinations, inbound hook tokens, alerts that insist, per-alert channels

New tables: destinations (a user's Apprise URLs and signed webhooks, encrypted at rest),
hook_tokens (inbound TradingView webhooks) and escalations (notifications that repeat until
acknowledged). alerts.channels names where an alert's notifications go; preferences say
which types insist, how often and how many times. delivery_log gets `round` (0: the first
delivery, then each repeat) in its unique key, and room for `dest:<id>` channel names.
SQLite's unique key on delivery_log was created unnamed: the naming convention below gives
the reflected one a name so the rebuild can drop it; the rebuild keeps AUTOINCREMENT.

Revision ID: 8d3f61a2c7e5
Revises: 5b1e7c2d9a40
Create Date: 2026-12-04 10:00:00.000000

"""
from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision = '8d3f61a2c7e5'
down_revision = '5b1e7c2d9a40'
branch_labels = None
depends_on = None

OLD_KEY = ['notification_id', 'user_id', 'channel']
NEW_KEY = [*OLD_KEY, 'round']
NAMES = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}
SQLITE = {'sqlite_autoincrement': True}


def _old_key_name():
    if op.get_bind().dialect.name == 'postgresql':
        return 'delivery_log_notification_id_user_id_channel_key'
    return 'uq_delivery_log_notification_id_user_id_channel'


def upgrade():
    op.create_table(
        'destinations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=10), nullable=False),
        sa.Column('name', sa.String(length=80), nullable=False),
        sa.Column('url_encrypted', sa.Text(), nullable=False),
        sa.Column('secret_encrypted', sa.Text(), nullable=True),
        sa.Column('url_masked', sa.String(length=200), nullable=False),
        sa.Column('types', sa.JSON(), nullable=True),
        sa.Column('escalate', sa.Boolean(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('failures', sa.Integer(), nullable=False),
        sa.Column('disabled_reason', sa.String(length=300), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('last_sent_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('user_id', 'name'),
        sqlite_autoincrement=True,
    )
    op.create_index('ix_destinations_user_id', 'destinations', ['user_id'])
    op.create_table(
        'hook_tokens',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=80), nullable=False),
        sa.Column('prefix', sa.String(length=16), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('last_used_at', sa.DateTime(), nullable=True),
        sa.Column('revoked_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_hash'),
        sqlite_autoincrement=True,
    )
    op.create_index('ix_hook_tokens_user_id', 'hook_tokens', ['user_id'])
    op.create_table(
        'escalations',
        sa.Column('notification_id', sa.String(length=40), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('type', sa.String(length=40), nullable=False),
        sa.Column('title', sa.String(length=200), nullable=False),
        sa.Column('rounds', sa.Integer(), nullable=False),
        sa.Column('max_rounds', sa.Integer(), nullable=False),
        sa.Column('every_s', sa.Integer(), nullable=False),
        sa.Column('next_at', sa.DateTime(), nullable=True),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.Column('ended', sa.String(length=12), nullable=False),
        sa.Column('acked_at', sa.DateTime(), nullable=True),
        sa.Column('acked_by', sa.String(length=200), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('notification_id'),
    )
    op.create_index('ix_escalations_user_id', 'escalations', ['user_id'])
    op.create_index('ix_escalations_next_at', 'escalations', ['next_at'])
    with op.batch_alter_table('alerts', table_kwargs=SQLITE) as batch_op:
        batch_op.add_column(sa.Column('channels', sa.JSON(), nullable=True))
    with op.batch_alter_table('preferences') as batch_op:
        batch_op.add_column(sa.Column('insist_types', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('insist_every_min', sa.Integer(), server_default='5',
                                      nullable=False))
        batch_op.add_column(sa.Column('insist_rounds', sa.Integer(), server_default='5',
                                      nullable=False))
    with op.batch_alter_table('delivery_log', naming_convention=NAMES,
                              table_kwargs=SQLITE) as batch_op:
        batch_op.add_column(sa.Column('round', sa.Integer(), server_default='0',
                                      nullable=False))
        batch_op.alter_column('channel', type_=sa.String(length=20),
                              existing_type=sa.String(length=10), existing_nullable=False)
        batch_op.drop_constraint(_old_key_name(), type_='unique')
        batch_op.create_unique_constraint('uq_delivery_log_notification_channel_round', NEW_KEY)


def downgrade():
    op.execute("DELETE FROM delivery_log WHERE round > 0")  # the old key has no room for them
    with op.batch_alter_table('delivery_log', naming_convention=NAMES,
                              table_kwargs=SQLITE) as batch_op:
        batch_op.drop_constraint('uq_delivery_log_notification_channel_round', type_='unique')
        batch_op.drop_column('round')
        batch_op.alter_column('channel', type_=sa.String(length=10),
                              existing_type=sa.String(length=20), existing_nullable=False)
        batch_op.create_unique_constraint(_old_key_name(), OLD_KEY)
    with op.batch_alter_table('preferences') as batch_op:
        batch_op.drop_column('insist_rounds')
        batch_op.drop_column('insist_every_min')
        batch_op.drop_column('insist_types')
    with op.batch_alter_table('alerts', table_kwargs=SQLITE) as batch_op:
        batch_op.drop_column('channels')
    op.drop_table('escalations')
    op.drop_table('hook_tokens')
    op.drop_table('destinations')
