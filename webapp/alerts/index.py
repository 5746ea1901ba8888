"""The alert index in Redis: armed alerts in per-symbol sorted sets keyed by threshold."""

from decimal import Decimal

import redis
from sqlalchemy import or_, select

from webapp import clock, keys
from webapp.extensions import db, get_redis
from webapp.models import Alert

# Sorted-set suffix per condition; `above` and `vol` fire upward, `below` downward.
SUFFIX = {"above": "above", "below": "below", "volume_above": "vol"}
REBUILD_ATTEMPTS = 5
# An indexed alert is one field of the tb:alerts hash (field = alert id), its value these
# fields joined by tabs: a packed row, so the matcher reads a whole batch in one HMGET and
# splits each row with one string.match. The note goes last because it may hold tabs
# itself. The Lua scripts here and in worker/match.lua split rows in this same order.
ROW_FIELDS = ("user_id", "symbol", "condition", "target", "mode", "rearm", "expires_at", "note")

# Index or unindex one alert atomically, keeping the tb:symbols refcount right. The old
# entry's symbol is known only once its row is read, so its sets' key prefixes come in ARGV.
# KEYS: 1 tb:alerts  2 tb:alerts:fired  3 tb:symbols  4 tb:alerts:version
# ARGV: 1 index prefix  2 re-arm prefix  3 id, then to index it: 4 row  5 symbol  6 suffix
#       7 target
_INDEX_LUA = """
local ALERTS, FIRED, SYMBOLS, VERSION = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local IDX, REARM, id = ARGV[1], ARGV[2], ARGV[3]
redis.call('INCR', VERSION) -- a rebuild racing with this change starts again
-- SQL's word is newer than the matcher's mark (e.g. resumed after it fired)
redis.call('HDEL', FIRED, id)
-- row: user_id \\t symbol \\t condition \\t ... (ROW_FIELDS): the old symbol and condition
local old = redis.call('HGET', ALERTS, id)
if old then
  local sym, cond = string.match(old, '^[^\\t]*\\t([^\\t]*)\\t([^\\t]*)\\t')
  local sfx = ({above='above', below='below', volume_above='vol'})[cond] or cond
  redis.call('ZREM', IDX .. sym .. ':' .. sfx, id)
  redis.call('ZREM', REARM .. sym .. ':' .. sfx, id)
  redis.call('HDEL', ALERTS, id)
  if redis.call('HINCRBY', SYMBOLS, sym, -1) <= 0 then
    redis.call('HDEL', SYMBOLS, sym)
  end
end
if #ARGV == 3 then return old and 1 or 0 end
local sym = ARGV[5]
redis.call('HSET', ALERTS, id, ARGV[4])
redis.call('ZADD', IDX .. sym .. ':' .. ARGV[6], ARGV[7], id)
redis.call('HINCRBY', SYMBOLS, sym, 1)
return 1
"""

# Drop a fired one-shot alert's mark (the slow path, once SQL says inactive).
# KEYS: 1 tb:alerts:fired  2 tb:alerts:version   ARGV: 1 id
_FORGET_LUA = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('INCR', KEYS[2]) -- a rebuild that read SQL before the update retries
return 1
"""

# Replace one symbol's index. The phase of each alert (armed or waiting to re-arm) is read
# here, inside the same atomic step, so a tick can never slip between reading and writing.
# A one-shot alert in tb:alerts:fired is skipped: SQL may not know yet that it fired.
# KEYS: 1 tb:alerts  2 tb:alerts:fired  3 tb:symbols, then the symbol's index and re-arm
#       sets per suffix (above, below, vol): 4 idx above  5 rearm above  6 idx below ...
# ARGV: 1 symbol, then per alert: id row (ROW_FIELDS) condition target rearm fired, where
# fired = '1' for a recurring alert that has fired before
_REBUILD_LUA = """
local ALERTS, FIRED, SYMBOLS, sym = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local SETS = {above = {KEYS[4], KEYS[5]}, below = {KEYS[6], KEYS[7]}, vol = {KEYS[8], KEYS[9]}}
local SFX = {above='above', below='below', volume_above='vol'}
local phase = {}
for _, s in ipairs({'above', 'below', 'vol'}) do
  local idx, rearm = SETS[s][1], SETS[s][2]
  for _, id in ipairs(redis.call('ZRANGE', idx, 0, -1)) do phase[id] = 'idx' end
  for _, id in ipairs(redis.call('ZRANGE', rearm, 0, -1)) do phase[id] = 'rearm' end
  redis.call('DEL', idx, rearm)
end
local keep, n = {}, 0
for i = 2, #ARGV, 6 do
  local id, cond = ARGV[i], ARGV[i + 2]
  if redis.call('HEXISTS', FIRED, id) == 0 then
    redis.call('HSET', ALERTS, id, ARGV[i + 1])
    -- unknown here (e.g. after a wipe): a recurring alert that has fired waits to re-arm,
    -- so a rebuild never fires the same crossing twice
    local p = phase[id] or (ARGV[i + 5] == '1' and 'rearm' or 'idx')
    if p == 'rearm' then
      redis.call('ZADD', SETS[SFX[cond]][2], ARGV[i + 4], id)
    else
      redis.call('ZADD', SETS[SFX[cond]][1], ARGV[i + 3], id)
    end
    keep[id], n = true, n + 1
  end
end
for id in pairs(phase) do
  if not keep[id] then redis.call('HDEL', ALERTS, id) end
end
if n > 0 then
  redis.call('HSET', SYMBOLS, sym, n)
else
  redis.call('HDEL', SYMBOLS, sym)
end
return n
"""


INDEX_KEYS = [keys.ALERTS, keys.ALERTS_FIRED, keys.SYMBOLS, keys.ALERTS_VERSION]
INDEX_PREFIXES = [keys.INDEX_PREFIX, keys.REARM_PREFIX]


def idx_key(symbol, condition):
    return keys.index(symbol, SUFFIX[condition])


def rearm_key(symbol, condition):
    return keys.rearm(symbol, SUFFIX[condition])


def _rebuild_keys(symbol):
    sets = [key for sfx in ("above", "below", "vol")
            for key in (keys.index(symbol, sfx), keys.rearm(symbol, sfx))]
    return [keys.ALERTS, keys.ALERTS_FIRED, keys.SYMBOLS, *sets]


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
    """The value the market must move back past before a recurring alert re-arms."""
    step = alert.target * alert.buffer / 100 if alert.buffer_is_pct else alert.buffer
    return alert.target + step if alert.condition == "below" else alert.target - step


def _fields(alert):
    return {
        "user_id": alert.user_id, "symbol": alert.symbol, "condition": alert.condition,
        "target": fmt_num(alert.target), "mode": alert.mode,
        "rearm": fmt_num(rearm_threshold(alert)), "expires_at": to_ms(alert.expires_at),
        "note": alert.note or "",
    }


def pack_row(fields):
    """An alert's tb:alerts value: its ROW_FIELDS joined by tabs."""
    return "\t".join(str(fields[name]) for name in ROW_FIELDS)


def unpack_row(row):
    """A tb:alerts value as a dict of strings (the note keeps any tabs it holds)."""
    return dict(zip(ROW_FIELDS, row.split("\t", len(ROW_FIELDS) - 1), strict=True))


def _script(r):
    return r.register_script(_INDEX_LUA)


def is_live(alert, now=None):
    """Active and not past its expiry: the alerts the index should hold."""
    now = now or clock.utcnow()
    return alert.active and (alert.expires_at is None or alert.expires_at > now)


def index(alert, r=None):
    """Arm `alert` in the index (replacing any earlier entry); unindex it if not live."""
    r = r or get_redis()
    if not is_live(alert):
        return unindex(alert.id, r)
    f = _fields(alert)
    args = [alert.id, pack_row(f), f["symbol"], SUFFIX[alert.condition], f["target"]]
    return _script(r)(keys=INDEX_KEYS, args=INDEX_PREFIXES + args)


def unindex(alert_id, r=None):
    """Remove an alert from the index; a no-op if it is not there."""
    r = r or get_redis()
    return _script(r)(keys=INDEX_KEYS, args=INDEX_PREFIXES + [alert_id])


def unindex_many(alert_ids, r=None):
    """Unindex several alerts in one round trip."""
    _each(_INDEX_LUA, INDEX_KEYS, INDEX_PREFIXES, alert_ids, r)


def forget_fired(alert_ids, r=None):
    """Drop fired one-shot alerts' marks; call only once SQL has them inactive."""
    _each(_FORGET_LUA, [keys.ALERTS_FIRED, keys.ALERTS_VERSION], [], alert_ids, r)


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
    script = r.register_script(_REBUILD_LUA)
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
            script(keys=_rebuild_keys(symbol), args=[symbol, *by_symbol.get(symbol, [])],
                   client=pipe)
        return sum(pipe.execute())  # without the fired one-shot alerts SQL does not know of


def _rebuild_args(alert):
    f = _fields(alert)
    fired = int(alert.mode == "recurring" and alert.last_fired_price is not None)
    return [alert.id, pack_row(f), f["condition"], f["target"], f["rearm"], fired]


def window_extreme(symbol, window_s, side, r=None):
    """(price, ms) of the lowest (`min`) or highest (`max`) trade in the symbol's trailing
    window as the matcher keeps it, or None while it keeps none (no move alert on it)."""
    head = (r or get_redis()).lindex(keys.window(symbol, window_s, side), 0)
    if not head:
        return None
    ms, price = head.split(":", 1)
    return float(price), int(ms)
