import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import MetaData, Table, delete, insert, inspect, select

from webapp.accounts import service as accounts
from webapp.alerts import service as alerts
from webapp.extensions import db
from webapp.models import utcnow

PREVIOUS = "c874a454e5c9"  # the initial schema: SQLite tables without AUTOINCREMENT
NEVER_REUSE = "4292979a0700"  # its successor: every table rebuilt with AUTOINCREMENT

pytestmark = pytest.mark.both_databases


def test_upgrade_from_empty_creates_every_table(make_app):
    app = make_app(create_tables=False)
    with app.app_context():
        upgrade()
        tables = set(inspect(db.engine).get_table_names())
        assert set(db.metadata.tables) <= tables
        assert "alembic_version" in tables


def test_migrations_match_the_models(make_app):
    app = make_app(create_tables=False)
    with app.app_context():
        upgrade()
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), db.metadata)
        assert diff == [], "models changed without a migration: run `make migration m=...`"


def test_downgrade_to_base_and_back(make_app):
    app = make_app(create_tables=False)
    with app.app_context():
        upgrade()
        downgrade(revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade()


def everything():
    """Every row of every table as the database has it at its revision, in key order."""
    tables = MetaData()
    tables.reflect(db.engine)
    return {name: db.session.execute(select(table).order_by(*table.primary_key)).all()
            for name, table in tables.tables.items() if name != "alembic_version"}


def old_alert(uid, price):
    """An alert written with the columns of an older revision (the model has more)."""
    table = Table("alerts", MetaData(), autoload_with=db.engine)
    return db.session.execute(insert(table).values(
        user_id=uid, symbol="BTCUSDT", condition="above", target=price, mode="once",
        buffer=0.5, buffer_is_pct=False, note="", active=True,
        created_at=utcnow())).inserted_primary_key[0]


def an_alert(uid, price):
    return alerts.create_alert(uid, {"symbol": "BTCUSDT", "type": "above", "price": price}).id


def test_upgrading_a_database_with_data_keeps_rows_and_ids_and_retires_ids(make_app):
    app = make_app(create_tables=False)
    with app.app_context():
        upgrade(revision=PREVIOUS)
        users = [accounts.create_user(f"u{i}@example.com", "correct horse") for i in range(3)]
        accounts.create_api_key(users[2], "bot")
        uid = users[1].id
        made = [old_alert(uid, price) for price in (1, 2, 3)]
        alerts_table = Table("alerts", MetaData(), autoload_with=db.engine)
        db.session.execute(delete(alerts_table).where(alerts_table.c.id == made[1]))  # a gap
        log_table = Table("delivery_log", MetaData(), autoload_with=db.engine)
        db.session.execute(log_table.insert().values(
            notification_id=f"1-0-{uid}", user_id=uid, channel="email", status="sent",
            attempts=0, error="", provider_id="", created_at=utcnow(), updated_at=utcnow()))
        db.session.commit()
        before = everything()
        db.session.remove()

        upgrade(revision=NEVER_REUSE)
        assert everything() == before
        db.session.remove()
        upgrade()
        newest = an_alert(uid, 4)
        assert newest > made[-1]
        alerts.delete_alert(uid, newest)
        assert an_alert(uid, 5) > newest
