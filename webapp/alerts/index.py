"""The alert index in Redis: armed alerts in per-symbol sorted sets keyed by threshold.

Everything of one symbol's index lives in the symbol's slot (webapp/keys.py), so each script
here touches that slot only. Two global hashes sit beside it, written around the scripts:
tb:symbols, the symbols with alerts (what the listener follows), and tb:alerts:symbol, each
alert's symbol (so an edit that changes it, or a removal, finds the old one).
"""

import logging
import time
from decimal import Decimal

from sqlalchemy import or_, select

from webapp import clock, keys
from webapp.alerts import scripts
from webapp.core.scripting import run_all
from webapp.extensions import db, get_redis
from webapp.models import Alert

log = logging.getLogger(__name__)

# Where each kind waits (webapp/keys.py index/rearm suffixes; semantics in worker/match/ and
# the README): level alerts are armed at once, crossings and channels wait for the next
# trade to find their state (`pend`), moves are armed on their window's sets.
SUFFIX = {"above": "above", "below": "below", "volume_above": "vol"}
CROSSINGS = {"crossing_up": "xup", "crossing_down": "xdown", "crossing": "xany"}
CHANNELS = ("channel_exit", "channel_enter")
MOVES = {"pct_up": "pctup", "pct_down": "pctdown"}
WINDOWS_S = (60, 300, 900, 3600, 14400, 86400)
REBUILD_ATTEMPTS = 6
REBUILD_PAUSE_S = 0.05  # before the 2nd attempt; doubled each time after (1.55 s in all)
# An indexed alert is one field of its symbol's tb:alerts:{S} hash (field = id), its value these
# fields joined by tabs: a packed row, so the matcher reads a whole batch in one HMGET and
# splits each row with one string.match. The note goes last because it may hold tabs
# itself. The Lua scripts here and in worker/match/ split rows in this same order.
ROW_FIELDS = ("user_id", "symbol", "condition", "target", "mode", "rearm", "expires_at",
              "cooldown_ms", "high", "window_s", "note")
ROW_DEFAULTS = {"cooldown_ms": 0, "high": "", "window_s": ""}

PREFIXES = [keys.INDEX_PREFIX, keys.REARM_PREFIX, keys.TAG_END]  # ARGV 1-3: INDEX, REBUILD


def idx_key(symbol, condition):
    return keys.index(symbol, SUFFIX[condition])


def rearm_key(symbol, condition):
    return keys.rearm(symbol, SUFFIX[condition])


def symbol_keys(symbol):
    """Every key of a symbol's index, as the index scripts take them: its rows, fired marks,
    version, kinds in use, then every set an alert can wait in (the roles of scripts.SETS)."""
    index = ["above", "below", "vol", "xup", "xdown", "xany", "chin_lo", "chin_hi", "chab",
             "chbe", "pend", "cool", "coolvol"]
    rearm = ["above", "below", "vol", "xup", "xdown", "xany_lo", "xany_hi"]
    for window_s in WINDOWS_S:
        index += [f"pctup:{window_s}", f"pctdown:{window_s}"]
        rearm += [f"pctup:{window_s}", f"pctdown:{window_s}"]
    return [keys.alerts(symbol), keys.alerts_fired(symbol), keys.alerts_version(symbol),
            keys.kinds_in_use(symbol), *(keys.index(symbol, s) for s in index),
            *(keys.rearm(symbol, s) for s in rearm)]


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
    """An alert's row in tb:alerts:{S}: its ROW_FIELDS joined by tabs."""
    return "\t".join(str(fields.get(name, ROW_DEFAULTS.get(name))) for name in ROW_FIELDS)


def unpack_row(row):
    """A row of tb:alerts:{S} as a dict of strings (the note keeps any tabs it holds)."""
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
    symbol = f["symbol"]
    old = r.hget(keys.ALERT_SYMBOLS, alert.id)
    if old is not None and old != symbol:
        _unindex_in(r, old, alert.id)
    r.hsetnx(keys.SYMBOLS, symbol, 1)  # first: a crash leaves an extra symbol, never one missing
    args = [*PREFIXES, symbol, alert.id, pack_row(f), *start(alert), "1" if resume else "0"]
    changed, count = _script(r)(keys=symbol_keys(symbol), args=args)
    r.hset(keys.ALERT_SYMBOLS, alert.id, symbol)
    prune_symbol(r, symbol, count)
    return changed


def unindex(alert_id, r=None):
    """Remove an alert from the index; a no-op if it is not there."""
    r = r or get_redis()
    symbol = r.hget(keys.ALERT_SYMBOLS, alert_id)
    return 0 if symbol is None else _unindex_in(r, symbol, alert_id)


def _unindex_in(r, symbol, alert_id):
    removed, count = _script(r)(keys=symbol_keys(symbol), args=[*PREFIXES, symbol, alert_id])
    r.hdel(keys.ALERT_SYMBOLS, alert_id)
    prune_symbol(r, symbol, count)
    return removed


def unindex_many(alert_ids, r=None):
    """Unindex several alerts in a few round trips."""
    if not alert_ids:
        return
    r = r or get_redis()
    alert_ids = sorted(alert_ids)
    where = dict(zip(alert_ids, r.hmget(keys.ALERT_SYMBOLS, alert_ids), strict=True))
    found = [(alert_id, symbol) for alert_id, symbol in where.items() if symbol is not None]
    if not found:
        return
    replies = run_all(r, _script(r), [
        (symbol_keys(symbol), [*PREFIXES, symbol, alert_id]) for alert_id, symbol in found])
    r.hdel(keys.ALERT_SYMBOLS, *(alert_id for alert_id, _ in found))
    left = {symbol: count for (_, symbol), (_, count) in zip(found, replies, strict=True)}
    for symbol, count in left.items():
        prune_symbol(r, symbol, count)


def forget_fired(symbol, alert_ids, r=None):
    """Drop fired one-shot alerts' marks; call only once SQL has them inactive."""
    if not alert_ids:
        return
    r = r or get_redis()
    forget = [keys.alerts_fired(symbol), keys.alerts_version(symbol)]
    run_all(r, r.register_script(scripts.FORGET),
            [(forget, [alert_id]) for alert_id in sorted(alert_ids)])


def prune_symbol(r, symbol, count):
    """Keep tb:symbols right after the symbol's index changed and `count` alerts are left.

    An empty symbol leaves the registry, then is put back if an alert came in meanwhile:
    the registry and the index are in different slots, so this is the order that never
    leaves a symbol with alerts unfollowed. A symbol whose outbox still holds a fired batch
    (a cluster's matcher between its two steps) stays, at 0, for the sweep to find it.
    """
    if count > 0:
        r.hset(keys.SYMBOLS, symbol, count)
        return
    for remove in (True, False):  # and once more after the removal
        alerts, batches = _left(r, symbol)
        if alerts or batches:
            r.hset(keys.SYMBOLS, symbol, alerts)
            return
        if remove:
            r.hdel(keys.SYMBOLS, symbol)


def _left(r, symbol):
    """(indexed alerts, batches waiting in the outbox) of a symbol, read together."""
    with r.pipeline(transaction=False) as pipe:
        pipe.hlen(keys.alerts(symbol))
        pipe.xlen(keys.outbox(symbol))
        return tuple(pipe.execute())


def registered(r=None):
    """Every symbol in tb:symbols, those at 0 alerts with a batch to finish included."""
    return (r or get_redis()).hkeys(keys.SYMBOLS)




def symbols(r=None):
    """Symbols with at least one indexed alert, and how many."""
    r = r or get_redis()
    return {sym: int(n) for sym, n in r.hgetall(keys.SYMBOLS).items() if int(n) > 0}


def live_alerts(now=None):
    """All active, unexpired alerts from SQL: what the index should hold."""
    now = now or clock.utcnow()
    query = select(Alert).where(
        Alert.active.is_(True), or_(Alert.expires_at.is_(None), Alert.expires_at > now)
    )
    return db.session.scalars(query).all()


def rebuild(r=None, now=None, owns=None):
    """Replace the index with SQL's live alerts, atomically per symbol; returns how many.
    `owns(symbol)`: only the symbols it is true for (a listener shard's own).

    Each symbol's version is read before SQL is; a symbol whose index changed meanwhile (an
    alert created, paused, deleted, or a fired one settled) is refused by the script and done
    again from a fresh read of SQL, pausing a little longer each time, REBUILD_ATTEMPTS in
    all. So is a symbol SQL names that the versions were not read for (its first alert came
    in between). One that keeps changing keeps its index, which the writes changing it keep
    right: forced from a stale read, it armed again alerts another listener shard had just
    settled through a storm, and they fired twice.
    """
    r = r or get_redis()
    script, todo, total = r.register_script(scripts.REBUILD), None, 0
    for attempt in range(REBUILD_ATTEMPTS):
        if attempt:
            time.sleep(REBUILD_PAUSE_S * 2 ** (attempt - 1))
        versions = _versions(r, todo, owns)
        by_symbol = _live_by_symbol(now, todo)
        ordered = sorted(versions)
        replies = run_all(r, script, [(symbol_keys(symbol), [
            *PREFIXES, symbol, versions[symbol],
            *(arg for alert in by_symbol.get(symbol, []) for arg in _rebuild_args(alert))])
            for symbol in ordered])
        todo = {symbol for symbol in by_symbol.keys() - versions.keys()
                if owns is None or owns(symbol)}
        for symbol, n in zip(ordered, replies, strict=True):
            if n < 0:
                todo.add(symbol)
                continue
            total += n
            _registered(r, symbol, n, by_symbol.get(symbol, []))
        if not todo:
            return total  # without the fired one-shot alerts SQL does not know of
    log.warning("alert index: %d symbols kept changing while rebuilt; they keep the index "
                "their own writes keep: %s", len(todo), ", ".join(sorted(todo)[:20]))
    return total


def _versions(r, todo, owns=None):
    """{symbol: its index version} of `todo`, or of every symbol the registry or SQL names
    (that `owns` is true for)."""
    if todo is None:
        db.session.rollback()
        todo = {symbol for symbol in set(r.hkeys(keys.SYMBOLS)) | set(db.session.scalars(
            select(Alert.symbol).where(Alert.active.is_(True)).distinct()))
            if owns is None or owns(symbol)}
    ordered = sorted(todo)
    with r.pipeline(transaction=False) as pipe:
        for symbol in ordered:
            pipe.get(keys.alerts_version(symbol))
        return dict(zip(ordered, (v or "0" for v in pipe.execute()), strict=True))


def _live_by_symbol(now, todo):
    """SQL's live alerts by symbol (of `todo` only, unless None), from a snapshot taken now."""
    db.session.rollback()  # after the versions were read: a change in between moves one
    by_symbol = {}
    for alert in live_alerts(now):
        if todo is None or alert.symbol in todo:
            by_symbol.setdefault(alert.symbol, []).append(alert)
    return by_symbol


def _registered(r, symbol, n, alerts):
    """After a symbol's rebuild: its alerts' entries in tb:alerts:symbol, then tb:symbols.

    An entry that names another symbol holding the alert stays: the alert moved there after
    SQL was read, and its edit wrote the entry. Missing and stale entries are rewritten.
    """
    ids = [alert.id for alert in alerts]
    mapped = dict(zip(ids, r.hmget(keys.ALERT_SYMBOLS, ids), strict=True)) if ids else {}
    other = [(i, s) for i, s in mapped.items() if s is not None and s != symbol]
    with r.pipeline(transaction=False) as pipe:
        for alert_id, elsewhere in other:
            pipe.hexists(keys.alerts(elsewhere), alert_id)
        moved = {i for (i, _), held in zip(other, pipe.execute(), strict=True) if held}
    fix = {i: symbol for i, s in mapped.items() if s != symbol and i not in moved}
    if fix:
        r.hset(keys.ALERT_SYMBOLS, mapping=fix)
    prune_symbol(r, symbol, n)


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
