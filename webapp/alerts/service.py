"""Price and volume alerts: validation and CRUD shared by the page, the API and the CLI.

SQL is the source of truth; every change also updates the Redis index, in an order that
leaves the two agreeing after any failure (see _write).
"""

import logging
import math
import re
from datetime import UTC, datetime

import redis
from sqlalchemy import func, inspect, select

from webapp import keys
from webapp.alerts import index as alert_index
from webapp.exceptions import InvalidInput, NotFound
from webapp.extensions import db, get_redis
from webapp.market import symbols
from webapp.models import Alert, utcnow

DEFAULT_BUFFER = 0.5
MAX_TARGET = 1e15
MAX_BUFFER_PCT = 50
NOTE_MAX = 200
SYMBOL_RE = re.compile(r"[A-Z0-9]{5,20}")
NUMBER_RE = re.compile(r"[+-]?\d*\.?\d+(?:[eE][+-]?\d+)?", re.ASCII)
GROUPED_RE = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", re.ASCII)  # 65,000 or 1,234.5
MAX_ID = 2**31 - 1  # alerts.id is an INTEGER: beyond it SQLite overflows, PostgreSQL errs
MODES = ("once", "recurring")
CONDITIONS = ("above", "below", "volume_above")
# Names a client written for the brief may send for `type`, beside our own.
ALIASES = {
    "price_above": "above", "price_below": "below", "volume": "volume_above",
    "volume_alert": "volume_above", "price_alert_above": "above", "price_alert_below": "below",
}

log = logging.getLogger(__name__)


def _number(value, text_ok):
    """(float, None) for a finite number in (0, 10^15), else (None, what is wrong with it).

    Form text may group thousands as people write them (65,000.5); the JSON API wants
    numbers, and says so when it gets a string that holds one.
    """
    if isinstance(value, str):
        text = value.strip()
        if GROUPED_RE.fullmatch(text):
            text = text.replace(",", "")
        if not NUMBER_RE.fullmatch(text):
            return None, "Give a number, e.g. 65000." if text else "Required: give a number."
        if not text_ok:
            return None, f"Send a JSON number ({text}), not a string."
        value = float(text)
    if value is None:
        return None, "Required: give a number."
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, "Give a number, e.g. 65000."
    try:
        value = float(value)
    except OverflowError:  # an int too big for a float
        return None, "Give a number below 10^15."
    if not math.isfinite(value):
        return None, "Give a finite number."
    if value <= 0:
        return None, "Give a number above 0."
    if value >= MAX_TARGET:
        return None, "Give a number below 10^15."
    return value, None


def _symbol(value, errors):
    symbol = value.strip().upper() if isinstance(value, str) else ""
    if not SYMBOL_RE.fullmatch(symbol):
        errors["symbol"] = "Use a Binance spot symbol such as BTCUSDT (5-20 letters or digits)."
    elif problem := symbols.refusal(symbol):
        errors["symbol"] = problem
    return symbol


def _condition(value, errors):
    name = value.strip().lower().replace("-", "_") if isinstance(value, str) else ""
    name = ALIASES.get(name, name)
    if name not in CONDITIONS:
        errors["type"] = "Choose above, below or volume_above."
    return name


def _buffer(value, text_ok, errors):
    """(buffer, is_pct): absolute in the quote currency, or a percentage like '0.1%'."""
    if value is None or value == "":
        return DEFAULT_BUFFER, False
    if isinstance(value, str) and value.strip().endswith("%"):
        text = value.strip()[:-1].strip()
        pct = float(text) if NUMBER_RE.fullmatch(text) else math.nan
        if 0 < pct <= MAX_BUFFER_PCT:
            return pct, True
        errors["buffer"] = f"A percentage buffer must be above 0% and at most {MAX_BUFFER_PCT}%."
        return None, True
    number, problem = _number(value, text_ok)
    if problem:
        errors["buffer"] = f"{problem} A buffer is an amount (e.g. 0.5) or a percentage (0.1%)."
    return number, False


def _expiry(value, now, errors):
    if value is None or value == "":
        return None
    try:
        when = datetime.fromisoformat(value.strip())
        if when.tzinfo is not None:  # stored as naive UTC, like every datetime here
            when = when.astimezone(UTC).replace(tzinfo=None)
    except (AttributeError, TypeError, ValueError, OverflowError):
        errors["expires_at"] = "Give a date and time in ISO 8601, e.g. 2030-01-31T18:00:00Z."
        return None
    if when <= now:
        errors["expires_at"] = "The expiry must be in the future."
    return when


def _note(value, errors):
    if value is None:
        return ""
    if not isinstance(value, str) or any(ord(ch) < 32 for ch in value):
        errors["note"] = "A note is a single line of text."
        return ""
    if not value.isascii() and any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        errors["note"] = "A note must be text: a lone UTF-16 surrogate is not a character."
        return ""
    if len(value.strip()) > NOTE_MAX:
        errors["note"] = f"Keep the note to {NOTE_MAX} characters at most."
    return value.strip()


def _mode(value, errors):
    mode = (value or "once").strip().lower() if isinstance(value, str | None) else ""
    if mode not in MODES:
        errors["mode"] = "Choose once or recurring."
    return mode


def validate(data, text_numbers=False, now=None):
    """Check an alert's fields (API names); returns the model's fields or raises InvalidInput."""
    if not isinstance(data, dict):
        raise InvalidInput({"body": "Send a JSON object."})
    errors = {}
    fields = {
        "symbol": _symbol(data.get("symbol"), errors),
        "condition": _condition(data.get("type", data.get("condition")), errors),
        "mode": _mode(data.get("mode"), errors),
        "expires_at": _expiry(data.get("expires_at"), now or utcnow(), errors),
        "note": _note(data.get("note"), errors),
    }
    fields["target"], problem = _number(data.get("price", data.get("target")), text_numbers)
    if problem:
        errors["price"] = problem
    fields["buffer"], fields["buffer_is_pct"] = _buffer(data.get("buffer"), text_numbers, errors)
    _check_rearm(fields, errors, given=data.get("buffer") not in (None, ""))
    if errors:
        raise InvalidInput(errors)
    return fields


def _check_rearm(fields, errors, given):
    # Past the target by an absolute buffer as large as the target would never re-arm.
    absolute = not fields["buffer_is_pct"] and fields["buffer"] and fields["target"]
    if fields["mode"] == "recurring" and absolute and fields["buffer"] >= fields["target"]:
        default = alert_index.fmt_num(DEFAULT_BUFFER)
        errors["buffer"] = ("Use a buffer smaller than the target, or a percentage like 0.1%."
                            if given else f"The default buffer ({default}) is not smaller than "
                            "this target: give a percentage like 0.1%.")


def create_alert(user_id, data, text_numbers=False, now=None):
    """Validate and store an alert, then arm it in the index."""
    alert = Alert(user_id=user_id, **validate(data, text_numbers, now))
    db.session.add(alert)
    _write(lambda: alert_index.index(alert), lambda: alert_index.unindex(alert.id))
    return alert


def _write(change, undo=None):
    """Finish the session's SQL change together with `change` to the index, or neither.

    The flush takes the write lock, so a locked or read-only database fails here, before
    Redis is touched; a Redis failure rolls SQL back; a failed commit undoes the index change.
    """
    try:
        db.session.flush()
        change()
    except Exception:
        db.session.rollback()
        raise
    try:
        db.session.commit()
    except Exception:
        db.session.rollback()
        try:
            if undo is not None:
                undo()
        except redis.RedisError:
            log.exception("alert index and SQL disagree until `flask alerts reindex`")
        raise


def _copy(alert):
    """A detached copy of the alert's columns: re-indexable after a rollback forgets it."""
    return Alert(**{attr.key: getattr(alert, attr.key) for attr in inspect(Alert).column_attrs})


def list_alerts(user_id):
    """A user's alerts, newest first."""
    query = select(Alert).where(Alert.user_id == user_id).order_by(Alert.id.desc())
    return db.session.scalars(query).all()


def count_alerts(user_id):
    return db.session.scalar(select(func.count(Alert.id)).where(Alert.user_id == user_id))


def status(alert, now=None, check=None):
    """active, paused, expired, fired (a one-shot that went off), or unknown_symbol.

    unknown_symbol: `check` (symbols.verdicts) says Binance does not trade the symbol, so
    the alert cannot fire, paused or not.
    """
    if alert.expires_at is not None and alert.expires_at <= (now or utcnow()):
        return "expired"
    if not alert.active and alert.mode == "once" and alert.last_fired_at:
        return "fired"
    if check == symbols.UNLISTED:
        return "unknown_symbol"
    return "active" if alert.active else "paused"


def get_alert(user_id, alert_id):
    """The user's alert, or NotFound (also for someone else's, or an impossible id)."""
    if not 1 <= alert_id <= MAX_ID:
        raise NotFound(f"alert {alert_id}")
    alert = db.session.get(Alert, alert_id)
    if alert is None or alert.user_id != user_id:
        raise NotFound(f"alert {alert_id}")
    return alert


def set_active(user_id, alert_id, active):
    """Pause or resume an alert; resuming arms it afresh."""
    alert = get_alert(user_id, alert_id)
    before = _copy(alert)
    alert.active = active
    # index() drops an alert that is not live. An undo arms it afresh: a recurring alert
    # that was waiting to re-arm may then fire once more for the same crossing.
    _write(lambda: alert_index.index(alert), lambda: alert_index.index(before))
    return alert


def delete_alert(user_id, alert_id):
    """Delete an alert and drop it from the index."""
    alert = get_alert(user_id, alert_id)
    before = _copy(alert)
    db.session.delete(alert)
    _write(lambda: alert_index.unindex(alert_id), lambda: alert_index.index(before))


def expire_due(now=None):
    """Deactivate alerts past their expiry and drop them from the index; returns how many."""
    now = now or utcnow()
    query = select(Alert).where(Alert.active.is_(True), Alert.expires_at <= now)
    expired = db.session.scalars(query).all()
    for alert in expired:
        alert.active = False
    ids = [alert.id for alert in expired]
    # No undo: an expired alert never fires, indexed or not, and the next run tries again.
    _write(lambda: alert_index.unindex_many(ids))
    return len(expired)


def last_prices(symbols):
    """The last traded price per symbol (None when no tick seen yet)."""
    symbols = sorted(set(symbols))
    with get_redis().pipeline(transaction=False) as pipe:
        for symbol in symbols:
            pipe.hget(keys.price(symbol), "price")
        return dict(zip(symbols, pipe.execute(), strict=True))


def buffer_text(alert):
    return f"{alert_index.fmt_num(alert.buffer)}%" if alert.buffer_is_pct else alert.buffer


def _iso(dt):
    return None if dt is None else dt.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def to_json(alert, check=None):
    """The API's view of an alert: the brief's fields (id, symbol, type, price) and ours.

    `check` is the symbol's verdict (symbols.verdicts), looked up when not given.
    """
    check = check or symbols.verdicts([alert.symbol])[alert.symbol]
    return {
        "id": alert.id, "symbol": alert.symbol, "type": alert.condition, "price": alert.target,
        "mode": alert.mode, "buffer": buffer_text(alert), "expires_at": _iso(alert.expires_at),
        "note": alert.note, "active": alert.active, "status": status(alert, check=check),
        "symbol_check": check,
        "created_at": _iso(alert.created_at),
        "last_fired_at": _iso(alert.last_fired_at), "last_fired_price": alert.last_fired_price,
    }
