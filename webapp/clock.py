"""Time as Tickerbell keeps it: milliseconds since the epoch in Redis and in notifications,
naive UTC datetimes in SQL (what SQLite and PostgreSQL `timestamp` columns hold)."""

import time
from datetime import UTC, datetime


def now_ms():
    return int(time.time() * 1000)


def utcnow():
    """Now as the SQL columns hold it: a naive UTC datetime."""
    return datetime.now(UTC).replace(tzinfo=None)


def ms_to_datetime(ms):
    """An aware UTC datetime."""
    return datetime.fromtimestamp(int(ms) / 1000, UTC)


def ms_to_sql(ms):
    """A naive UTC datetime, as the SQL columns hold them."""
    return ms_to_datetime(ms).replace(tzinfo=None)


def ms_to_iso(ms):
    """ISO 8601 UTC with milliseconds and a Z, as the API gives times kept in ms."""
    return ms_to_datetime(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_ms(dt):
    """Milliseconds of an aware datetime, or of a naive one taken as UTC (from SQL)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)
