"""never reuse ids: AUTOINCREMENT on every SQLite table with an integer id

SQLite hands the highest rowid out again once its row is deleted, unless the table was
created with AUTOINCREMENT, which only a rebuild can add: each table is copied into a new one
with the same columns, constraints, indexes, rows and ids; the copy seeds sqlite_sequence
with the highest id, so new ids continue above it. PostgreSQL's sequences never go back, so
there is nothing to do there (and rebuilding a table would start a new sequence at 1).

Revision ID: 4292979a0700
Revises: c874a454e5c9
Create Date: 2026-11-24 10:00:00.000000

"""
from alembic import op

# revision identifiers, used by Alembic.
revision = '4292979a0700'
down_revision = 'c874a454e5c9'
branch_labels = None
depends_on = None

TABLES = ("users", "api_keys", "service_tokens", "alerts", "strategy_follows",
          "push_subscriptions", "delivery_log", "digest_runs", "known_devices")


def _rebuild(autoincrement):
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always",
                                  table_kwargs={"sqlite_autoincrement": autoincrement}):
            pass


def upgrade():
    _rebuild(True)


def downgrade():
    _rebuild(False)
