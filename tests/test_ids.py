"""No id is handed out twice: a deleted row's id stays retired, on SQLite and PostgreSQL."""

from datetime import datetime

import pytest
from flask_migrate import upgrade
from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, Text, delete, insert

from webapp.accounts import service as accounts
from webapp.alerts import service as alerts
from webapp.extensions import db

pytestmark = pytest.mark.both_databases



def own_integer_id(table):
    """True when the table numbers its rows itself (one integer key that is no reference)."""
    key = list(table.primary_key)
    return len(key) == 1 and isinstance(key[0].type, Integer) and not key[0].foreign_keys


INTEGER_ID_TABLES = sorted(n for n, t in db.metadata.tables.items() if own_integer_id(t))


def row(table, n, user_id):
    """Values for the table's required columns, unique per n."""
    values = {}
    for column in table.columns:
        if column.primary_key or column.nullable or column.default is not None:
            continue
        if column.foreign_keys:
            values[column.name] = user_id
        elif isinstance(column.type, String | Text):
            values[column.name] = f"{n}-{table.name}"[: column.type.length or 40]
        elif isinstance(column.type, DateTime):
            values[column.name] = datetime(2026, 1, 1 + n)
        else:
            values[column.name] = {Integer: n, Float: 1.0, Boolean: False, JSON: {}}[
                type(column.type)]
    return values


def create_delete_create(table, user_id):
    """(the newest id, the id created after deleting it)."""
    def add(n):
        result = db.session.execute(insert(table).values(row(table, n, user_id)))
        return result.inserted_primary_key[0]

    add(1)
    newest = add(2)
    db.session.execute(delete(table).where(table.c.id == newest))
    db.session.commit()
    again = add(3)
    db.session.commit()
    return newest, again


def test_every_integer_id_table_is_checked():
    assert "alerts" in INTEGER_ID_TABLES and "users" in INTEGER_ID_TABLES
    assert "preferences" not in INTEGER_ID_TABLES  # its id is the user's


@pytest.mark.parametrize("schema", ["models", "migrations"])
@pytest.mark.parametrize("name", INTEGER_ID_TABLES)
def test_deleting_the_newest_row_does_not_free_its_id(make_app, name, schema):
    app = make_app(create_tables=schema == "models")
    with app.app_context():
        if schema == "migrations":
            upgrade()
        user_id = accounts.create_user("owner@example.com", "correct horse").id
        newest, again = create_delete_create(db.metadata.tables[name], user_id)
        assert again > newest


def test_a_new_alert_never_takes_a_deleted_alerts_id(app):
    with app.app_context():
        uid = accounts.create_user("trader@example.com", "correct horse").id
        first = alerts.create_alert(uid, {"symbol": "BTCUSDT", "type": "above", "price": 1}).id
        newest = alerts.create_alert(uid, {"symbol": "BTCUSDT", "type": "above", "price": 2}).id
        alerts.delete_alert(uid, newest)
        again = alerts.create_alert(uid, {"symbol": "BTCUSDT", "type": "above", "price": 3}).id
        assert first < newest < again
