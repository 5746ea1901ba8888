"""The alert index in Redis: armed alerts in per-symbol sorted sets keyed by threshold."""

from decimal import Decimal

import redis
from sqlalchemy import or_, select

from webapp import clock, keys
from webapp.alerts import scripts
from webapp.extensions import db, get_redis
from webapp.models import Alert

# Where each kind waits (webapp/keys.py index/rearm suffixes; semantics in match.lua and
# the README): level alerts are armed at once, crossings and channels wait for the next
# trade to find their state (`pend`), moves are armed on their window's sets.
SUFFIX = {"above": "above", "below": "below", "volume_above": "vol"}
CROSSINGS = {"crossing_up": "xup", "crossing_down": "xdown", "crossing": "xany"}
CHANNELS = ("channel_exit", "channel_enter")
MOVES = {"pct_up": "pctup", "pct_down": "pctdown"}
WINDOWS_S = (60, 300, 900, 3600, 14400, 86400)
REBUILD_ATTEMPTS = 5
# An indexed alert is one field of the tb:alerts hash (field = alert id), its value these
# fields joined by tabs: a packed row, so the matcher reads a whole batch in one HMGET and
# splits each row with one string.match. The note goes last because it may hold tabs
# itself. The Lua scripts here and in worker/match.lua split rows in this same order.
ROW_FIELDS = ("user_id", "symbol", "condition", "target", "mode", "rearm", "expires_at",
              "cooldown_ms", "high", "window_s", "note")
ROW_DEFAULTS = {"cooldown_ms": 0, "high": "", "window_s": ""}

INDEX_KEYS = [keys.ALERTS, keys.ALERTS_FIRED, keys.SYMBOLS, keys.ALERTS_VERSION]
INDEX_PREFIXES = [keys.INDEX_PREFIX, keys.REARM_PREFIX, keys.kinds_in_use("")]


def idx_key(symbol, condition):
    return keys.index(symbol, SUFFIX[condition])


def rearm_key(symbol, condition):
    return keys.rearm(symbol, SUFFIX[condition])


def _rebuild_keys(symbol):
    """Every set an alert of the symbol can wait in (the roles of scripts.SETS)."""
    index = ["above", "below", "vol", "xup", "xdown", "xany", "chin_lo", "chin_hi", "chab",
             "chbe", "pend", "cool", "coolvol"]
    rearm = ["above", "below", "vol", "xup", "xdown", "xany_lo", "xany_hi"]
    for window_s in WINDOWS_S:
        index += [f"pctup:{window_s}", f"pctdown:{window_s}"]
        rearm += [f"pctup:{window_s}", f"pctdown:{window_s}"]
    return [keys.ALERTS, keys.ALERTS_FIRED, keys.SYMBOLS, keys.kinds_in_use(symbol),
            *(keys.index(symbol, s) for s in index), *(keys.rearm(symbol, s) for s in rearm)]


def fmt_num(value):
    """A float as a short JSON-valid number string: 65000, 0.5, 0.00001234."""
    text = repr(float(value))
    if "e" in text:
        text = format(Decimal(text), "f")  # exact, and without an exponent
    return text[:-2] if text.endswith(".0") else text


def to_ms(dt):
    """A naive-UTC datetime as epoch milliseconds; None as 0 (never)."""
    return 0 if dt is None else clock.to_ms(dt)


def rearm_threshold(alert):
    """The value the market must move back past before a recurring alert re-arms.

    For a move (pct_*) it is the move in percentage points; a channel re-arms by leaving
    and coming back, so it has none.
    """
    if alert.condition in MOVES:
        return alert.target - alert.buffer
    if alert.condition in CHANNELS:
        return 0
    step = alert.target * alert.buffer / 100 if alert.buffer_is_pct else alert.buffer
    if alert.condition in ("below", "crossing_down"):
        return alert.target + step
    return alert.target - step


def _fields(alert):
    return {
        "user_id": alert.user_id, "symbol": alert.symbol, "condition": alert.condition,
        "target": fmt_num(alert.target), "mode": alert.mode,
        "rearm": fmt_num(rearm_threshold(alert)), "expires_at": to_ms(alert.expires_at),
        "cooldown_ms": (alert.cooldown_s or 0) * 1000,
        "high": "" if alert.high is None else fmt_num(alert.high),
        "window_s": alert.window_s or "", "note": alert.note or "",
    }


def start(alert):
    """(index suffix, score): where a new or re-placed alert starts waiting."""
    if alert.condition in SUFFIX:
        return SUFFIX[alert.condition], fmt_num(alert.target)
    if alert.condition in MOVES:
        return f"{MOVES[alert.condition]}:{alert.window_s}", fmt_num(alert.target)
    return "pend", 0  # crossings and channels: the next trade finds their state


def pack_row(fields):
    """An alert's tb:alerts value: its ROW_FIELDS joined by tabs."""
    return "\t".join(str(fields.get(name, ROW_DEFAULTS.get(name))) for name in ROW_FIELDS)


def unpack_row(row):
    """A tb:alerts value as a dict of strings (the note keeps any tabs it holds)."""
    return dict(zip(ROW_FIELDS, row.split("\t", len(ROW_FIELDS) - 1), strict=True))


def _script(r):
    return r.register_script(scripts.INDEX)


def is_live(alert, now=None):
    """Active and not past its expiry: the alerts the index should hold."""
    now = now or clock.utcnow()
    return alert.active and (alert.expires_at is None or alert.expires_at > now)


def index(alert, r=None, resume=False):
    """Arm `alert` in the index (replacing any earlier entry); unindex it if not live.

    A one-shot alert that fired and waits for the slow path is left alone, unless this is
    a resume (`resume=True`): then it is armed again.
    """
    r = r or get_redis()
    if not is_live(alert):
        return unindex(alert.id, r)
    f = _fields(alert)
    args = [alert.id, pack_row(f), f["symbol"], *start(alert), "1" if resume else "0"]
    return _script(r)(keys=INDEX_KEYS, args=INDEX_PREFIXES + args)


def unindex(alert_id, r=None):
    """Remove an alert from the index; a no-op if it is not there."""
    r = r or get_redis()
    return _script(r)(keys=INDEX_KEYS, args=INDEX_PREFIXES + [alert_id])


def unindex_many(alert_ids, r=None):
    """Unindex several alerts in one round trip."""
    _each(scripts.INDEX, INDEX_KEYS, INDEX_PREFIXES, alert_ids, r)


def forget_fired(alert_ids, r=None):
    """Drop fired one-shot alerts' marks; call only once SQL has them inactive."""
    _each(scripts.FORGET, [keys.ALERTS_FIRED, keys.ALERTS_VERSION], [], alert_ids, r)


def _each(lua, script_keys, args, alert_ids, r):
    if not alert_ids:
        return
    r = r or get_redis()
    script = r.register_script(lua)
    with r.pipeline(transaction=False) as pipe:
        for alert_id in sorted(alert_ids):
            script(keys=script_keys, args=[*args, alert_id], client=pipe)
        pipe.execute()


def symbols(r=None):
    """Symbols with at least one indexed alert, and how many."""
    r = r or get_redis()
    return {sym: int(n) for sym, n in r.hgetall(keys.SYMBOLS).items()}


def live_alerts(now=None):
    """All active, unexpired alerts from SQL: what the index should hold."""
    now = now or clock.utcnow()
    query = select(Alert).where(
        Alert.active.is_(True), or_(Alert.expires_at.is_(None), Alert.expires_at > now)
    )
    return db.session.scalars(query).all()


def rebuild(r=None, now=None):
    """Replace the index with SQL's live alerts, atomically per symbol; returns how many."""
    r = r or get_redis()
    for _ in range(REBUILD_ATTEMPTS):
        try:
            return _rebuild_once(r, now, watch=True)
        except redis.WatchError:
            continue  # an alert was created, paused or deleted meanwhile: read SQL again
    return _rebuild_once(r, now, watch=False)


def _rebuild_once(r, now, watch):
    script = r.register_script(scripts.REBUILD)
    with r.pipeline() as pipe:
        if watch:
            pipe.watch(keys.ALERTS_VERSION)  # bumped by every index write, never by ticks
        db.session.rollback()  # a fresh SQL snapshot, taken after the watch began
        alerts = live_alerts(now)
        by_symbol = {}
        for alert in alerts:
            by_symbol.setdefault(alert.symbol, []).extend(_rebuild_args(alert))
        pipe.multi()
        for symbol in sorted(set(r.hkeys(keys.SYMBOLS)) | set(by_symbol)):
            script(keys=_rebuild_keys(symbol), client=pipe, args=[
                symbol, keys.INDEX_PREFIX, keys.REARM_PREFIX, *by_symbol.get(symbol, [])])
        return sum(pipe.execute())  # without the fired one-shot alerts SQL does not know of


def _rebuild_args(alert):
    f = _fields(alert)
    fired = int(alert.mode == "recurring" and alert.last_fired_price is not None)
    return [alert.id, pack_row(f), fired]


def window_extremes(windows, r=None):
    """{(symbol, window_s, side): (price, ms) or None}: the lowest (`min`) or highest (`max`)
    trade of each trailing window as the matcher keeps it (None: it keeps none, no move alert
    on it), in one round trip."""
    windows = list(windows)
    with (r or get_redis()).pipeline(transaction=False) as pipe:
        for window in windows:
            pipe.lindex(keys.window(*window), 0)
        heads = pipe.execute()
    return {window: _extreme(head) for window, head in zip(windows, heads, strict=True)}


def _extreme(head):
    if not head:
        return None
    ms, price = head.split(":", 1)
    return float(price), int(ms)
