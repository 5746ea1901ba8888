"""The alert kinds migration: old rows get the defaults, a downgrade keeps rows and ids."""

import pytest
from flask_migrate import downgrade, upgrade
from sqlalchemy import MetaData, Table, insert, inspect, select, text

from webapp.accounts import service as accounts
from webapp.extensions import db
from webapp.models import utcnow

BEFORE = "4292979a0700"
NEW_COLUMNS = {"high", "window_s", "cooldown_s", "message"}

pytestmark = pytest.mark.both_databases


def alerts_table():
    return Table("alerts", MetaData(), autoload_with=db.engine)


def columns():
    return {c["name"] for c in inspect(db.engine).get_columns("alerts")}


def test_upgrade_gives_old_alerts_no_cooldown_and_no_message(make_app):
    app = make_app(create_tables=False)
    with app.app_context():
        upgrade(revision=BEFORE)
        uid = accounts.create_user("old@example.com", "correct horse").id
        db.session.execute(insert(alerts_table()).values(
            user_id=uid, symbol="BTCUSDT", condition="above", target=65000, mode="once",
            buffer=0.5, buffer_is_pct=False, note="", active=True, created_at=utcnow()))
        db.session.commit()
        db.session.remove()
        upgrade()
        table = alerts_table()
        row = db.session.execute(select(table)).one()._mapping
        assert (row["high"], row["window_s"], row["cooldown_s"], row["message"]) == (
            None, None, 0, "")


def test_downgrade_drops_the_columns_and_keeps_rows_and_ids(make_app):
    app = make_app(create_tables=False)
    with app.app_context():
        upgrade()
        uid = accounts.create_user("new@example.com", "correct horse").id
        table = alerts_table()
        ids = [db.session.execute(insert(table).values(
            user_id=uid, symbol="BTCUSDT", condition="channel_exit", target=low, high=low * 2,
            mode="once", buffer=0.5, buffer_is_pct=False, note="", active=True,
            created_at=utcnow(), cooldown_s=60, message="out")).inserted_primary_key[0]
            for low in (1, 2, 3)]
        db.session.execute(table.delete().where(table.c.id == ids[-1]))
        db.session.commit()
        db.session.remove()

        downgrade(revision=BEFORE)
        assert not NEW_COLUMNS & columns()
        kept = db.session.execute(select(alerts_table().c.id).order_by("id")).scalars().all()
        assert kept == ids[:2]
        if db.engine.dialect.name == "sqlite":  # the rebuilt table still never reuses an id
            sql = db.session.scalar(text("SELECT sql FROM sqlite_master WHERE name='alerts'"))
            assert "AUTOINCREMENT" in sql
        db.session.remove()

        upgrade()
        assert NEW_COLUMNS <= columns()
