"""The SQL engine, set up per backend so a slow or locked database never stalls the web process.

SQLite runs in WAL mode: readers never wait for the writer, so only a write can wait for a
lock, and it waits at most SQLITE_BUSY_TIMEOUT_MS (default 2000) before failing, which the
request answers with 503 and Retry-After. Under gunicorn's gevent worker such a wait happens
in a worker thread, not in the event loop (see Connection below).

PostgreSQL: psycopg 3 (>= 3.1.14) waits cooperatively once gevent has patched the process,
so nothing more is needed there; PG_LOCK_TIMEOUT_MS (default 2000, 0 for none) becomes the
session's lock_timeout, so a write queued behind another's row or table lock also answers 503
soon rather than hanging. Both settings are read from the environment (webapp/config.py).
"""

import logging
import os
import sqlite3
import sys

from flask import current_app
from sqlalchemy import event, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

from webapp.extensions import db
from webapp.models import User

SQL_THREADS = 15  # as many as SQLAlchemy's pool hands out (5 + 10 overflow)

log = logging.getLogger(__name__)
_pool = None


def init_app(app):
    """Bind `db` to the app with the backend's engine options and connection hooks."""
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    options = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    if url.get_backend_name() == "sqlite":
        options["connect_args"] = {
            "timeout": app.config["SQLITE_BUSY_TIMEOUT_MS"] / 1000, "factory": Connection,
            "check_same_thread": False,  # a statement may run in a worker thread
            **options.get("connect_args", {})}
    elif url.get_backend_name() == "postgresql" and app.config["PG_LOCK_TIMEOUT_MS"] > 0:
        given = url.query.get("options", "")
        options["connect_args"] = {
            "options": f"{given} -c lock_timeout={app.config['PG_LOCK_TIMEOUT_MS']}".strip(),
            **options.get("connect_args", {})}
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options
    db.init_app(app)
    if url.get_backend_name() == "sqlite":
        with app.app_context():
            event.listen(db.engine, "connect", _on_connect)
            event.listen(db.engine, "checkout", _on_checkout)


def _on_connect(dbapi_connection, record):
    # SQLite opens a file it may not write read-only, and the connection stays read-only when
    # the file is writable again: note it, so _on_checkout can swap it for a fresh one.
    # (os.access, not a trial open: closing any descriptor of the file would drop the
    # process's SQLite locks on it. It sees what SQLite's open sees, root included.)
    # Each cursor is closed at once: one left unfinished (a worker thread may still hold it)
    # keeps a read transaction open, and then the connection's first write fails with
    # "database is locked" at once instead of waiting for the lock.
    cursor = dbapi_connection.cursor()
    try:
        path = cursor.execute("PRAGMA database_list").fetchall()[0][2]
        if path and not os.access(path, os.W_OK):
            record.info["read_only_path"] = path
        cursor.execute("PRAGMA journal_mode=WAL").fetchall()  # kept in the file
    except sqlite3.OperationalError as exc:  # read-only or locked: it stays as it was
        log.warning("sqlite: could not switch to WAL mode: %s", exc)
    finally:
        cursor.close()


def _on_checkout(_dbapi_connection, record, _proxy):
    path = record.info.get("read_only_path")
    if path and os.access(path, os.W_OK):
        raise DisconnectionError("the database file is writable again")  # the pool reconnects


def _gevent_patched():
    monkey = sys.modules.get("gevent.monkey")  # never import gevent where it is not in use
    return monkey is not None and monkey.is_module_patched("select")


def _off_loop(func, *args):
    """Run a sqlite3 call in a worker thread when gevent runs the process, else right here."""
    global _pool
    if not _gevent_patched():
        return func(*args)
    if _pool is None:
        from gevent.threadpool import ThreadPool

        # Our own pool: gevent's resolver uses the hub's, and must not queue behind a lock.
        _pool = ThreadPool(SQL_THREADS)
    result, error = _pool.apply(_outcome, (func, args))
    if error is not None:
        raise error
    return result


def _outcome(func, args):
    # Returned, not raised: gevent would print the traceback of an error raised in the pool,
    # and "database is locked" is an answer here (503), not a crash.
    try:
        return func(*args), None
    except Exception as exc:
        return None, exc


class Connection(sqlite3.Connection):
    """sqlite3 waits for a lock inside C, which would freeze gevent's loop and every request
    of the process with it; sqlite3 releases the GIL meanwhile, so in a worker thread only the
    waiting request waits. In WAL mode only writes wait, so reads stay on the loop (a thread
    hand-off costs more than they do, and they never queue behind a blocked write)."""

    def cursor(self, factory=None):
        return super().cursor(factory or Cursor)

    def commit(self):
        if self.in_transaction:  # else a no-op, not worth a hand-off
            _off_loop(super().commit)


class Cursor(sqlite3.Cursor):
    def execute(self, sql, parameters=()):
        if sql.lstrip()[:6].upper() == "SELECT":
            return super().execute(sql, parameters)
        return _off_loop(super().execute, sql, parameters)

    def executemany(self, sql, seq_of_parameters):
        return _off_loop(super().executemany, sql, seq_of_parameters)


def wait_at_most(ms):
    """End this transaction's lock waits after `ms`, or PG_LOCK_TIMEOUT_MS when sooner (for a
    report that must answer soon); SQLite's reads never wait for a lock (WAL)."""
    if db.engine.dialect.name == "postgresql":
        configured = current_app.config["PG_LOCK_TIMEOUT_MS"]
        ms = min(ms, configured) if configured > 0 else ms
        db.session.execute(text(f"SET LOCAL lock_timeout = {int(ms)}"))


def insert_ignore(model, rows):
    """Insert rows and commit, skipping any a unique key already holds: steps that may run
    twice (a retried job, two racing runs) write once."""
    if not rows:
        return
    dialect = postgresql if db.engine.dialect.name == "postgresql" else sqlite
    db.session.execute(dialect.insert(model).on_conflict_do_nothing(), rows)
    db.session.commit()


def add_within(row, user_id, held, limit):
    """Add `row` (not yet committed) unless the user would then hold more than `limit`, as
    `held()` counts; True when added, else False with the session rolled back (all of it:
    call it with nothing else pending). The count comes after the insert, with the user's
    row locked (PostgreSQL) or the one write lock held (SQLite), so requests racing each
    other cannot each find room for one more."""
    # NO KEY UPDATE: rows that only refer to the user (deliveries, escalations) go on
    db.session.execute(select(User.id).where(User.id == user_id)
                       .with_for_update(key_share=True))
    db.session.add(row)
    db.session.flush()
    if held() > limit:
        db.session.rollback()
        return False
    return True
