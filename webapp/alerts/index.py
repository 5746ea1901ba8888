"""The alert index in Redis: armed alerts in per-symbol sorted sets keyed by threshold."""

from decimal import Decimal

import redis
from sqlalchemy import or_, select

from webapp import clock, keys
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

# The sets an alert of a kind can be in, as (role, index or rearm, suffix): a script that
# removes or rebuilds an alert looks in these only. Roles: `armed` (scored by the level),
# `rearm` (by the re-arm threshold; `rearm_hi` by the other side of a crossing's),
# `pend`, `cool` (by the ms its cooldown ends), and a channel's `in_lo`, `in_hi`, `above`,
# `below` (by its low or high).
_SETS_LUA = """
local function sets_of(cond, win)
  local S = {
    above = {{'armed', 'i', 'above'}, {'rearm', 'r', 'above'}, {'cool', 'i', 'cool'}},
    below = {{'armed', 'i', 'below'}, {'rearm', 'r', 'below'}, {'cool', 'i', 'cool'}},
    volume_above = {{'armed', 'i', 'vol'}, {'rearm', 'r', 'vol'}, {'cool', 'i', 'coolvol'}},
    crossing_up = {{'armed', 'i', 'xup'}, {'rearm', 'r', 'xup'}, {'pend', 'i', 'pend'},
      {'cool', 'i', 'cool'}},
    crossing_down = {{'armed', 'i', 'xdown'}, {'rearm', 'r', 'xdown'}, {'pend', 'i', 'pend'},
      {'cool', 'i', 'cool'}},
    crossing = {{'armed', 'i', 'xany'}, {'rearm', 'r', 'xany_lo'}, {'rearm_hi', 'r', 'xany_hi'},
      {'pend', 'i', 'pend'}, {'cool', 'i', 'cool'}},
    pct_up = {{'armed', 'i', 'pctup:' .. win}, {'rearm', 'r', 'pctup:' .. win},
      {'cool', 'i', 'cool'}},
    pct_down = {{'armed', 'i', 'pctdown:' .. win}, {'rearm', 'r', 'pctdown:' .. win},
      {'cool', 'i', 'cool'}},
  }
  local channel = {{'in_lo', 'i', 'chin_lo'}, {'in_hi', 'i', 'chin_hi'}, {'above', 'i', 'chab'},
    {'below', 'i', 'chbe'}, {'pend', 'i', 'pend'}, {'cool', 'i', 'cool'}}
  S.channel_exit, S.channel_enter = channel, channel
  return S[cond] or {}
end
"""

# The kinds in use per symbol (keys.kinds_in_use): the matcher skips what no alert needs.
# Fields: a window's seconds (move alerts on it), `x` crossings, `ch` channels, `cd` alerts
# with a cooldown. match.lua shares this function (worker/matcher.py prepends it).
USES_LUA = """
local function uses(cond, win, cool)
  local out = {}
  if win ~= '' then out[#out + 1] = win end
  if string.sub(cond, 1, 8) == 'crossing' then out[#out + 1] = 'x' end
  if string.sub(cond, 1, 7) == 'channel' then out[#out + 1] = 'ch' end
  if (tonumber(cool) or 0) > 0 then out[#out + 1] = 'cd' end
  return out
end
local function count_uses(key, cond, win, cool, step)
  for _, field in ipairs(uses(cond, win, cool)) do
    if redis.call('HINCRBY', key, field, step) <= 0 then redis.call('HDEL', key, field) end
  end
end
"""

# Index or unindex one alert atomically, keeping the tb:symbols and in-use counts right.
# The old entry's symbol is known only once its row is read, so key prefixes come in ARGV.
# An edit that keeps what the alert watches (symbol, kind, level, high, window) keeps its
# phase: an alert waiting to re-arm, cooling down or inside a channel stays so, and one
# crossing never fires twice because of an edit. Anything else is placed as new.
# KEYS: 1 tb:alerts  2 tb:alerts:fired  3 tb:symbols  4 tb:alerts:version
# ARGV: 1 index prefix  2 re-arm prefix  3 kinds-in-use prefix  4 id, then to index it:
#       5 row  6 symbol  7 the set it starts in (index suffix)  8 its score  9 '1' to resume
_INDEX_LUA = _SETS_LUA + USES_LUA + """
local ALERTS, FIRED, SYMBOLS, VERSION = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local IDX, REARM, INUSE, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
-- symbol, condition, target, rearm, cooldown_ms, high, window_s (ROW_FIELDS)
local ROW = '^[^\\t]*\\t([^\\t]*)\\t([^\\t]*)\\t([^\\t]*)\\t[^\\t]*\\t([^\\t]*)\\t[^\\t]*\\t'
  .. '([^\\t]*)\\t([^\\t]*)\\t([^\\t]*)\\t'
local function key(sym, set) return (set[2] == 'i' and IDX or REARM) .. sym .. ':' .. set[3] end
redis.call('INCR', VERSION) -- a rebuild racing with this change starts again
-- A one-shot alert the matcher fired stays marked until the slow path has it inactive in
-- SQL: an edit meanwhile must not arm it again (one crossing, one notification). A resume
-- or an unindex is SQL's newer word and clears the mark.
if #ARGV == 4 or ARGV[9] == '1' then
  redis.call('HDEL', FIRED, id)
elseif redis.call('HEXISTS', FIRED, id) == 1 then
  return 0
end
local old = redis.call('HGET', ALERTS, id)
if old and #ARGV > 4 then
  local o_sym, o_cond, o_target, _, o_cool, o_high, o_win = string.match(old, ROW)
  local n_sym, n_cond, n_target, n_rearm, n_cool, n_high, n_win = string.match(ARGV[5], ROW)
  if o_sym == n_sym and o_cond == n_cond and o_target == n_target and o_high == n_high
      and o_win == n_win then
    redis.call('HSET', ALERTS, id, ARGV[5])
    count_uses(INUSE .. n_sym, o_cond, o_win, o_cool, -1)
    count_uses(INUSE .. n_sym, n_cond, n_win, n_cool, 1)
    for _, set in ipairs(sets_of(n_cond, n_win)) do -- a new buffer moves the re-arm point
      local k = key(n_sym, set)
      if set[1] == 'rearm' then
        redis.call('ZADD', k, 'XX', n_rearm, id)
      elseif set[1] == 'rearm_hi' then
        redis.call('ZADD', k, 'XX', string.format('%.17g', 2 * tonumber(n_target)
          - tonumber(n_rearm)), id)
      end
    end
    return 1
  end
end
if old then
  local sym, cond, _, _, cool, _, win = string.match(old, ROW)
  for _, set in ipairs(sets_of(cond, win)) do redis.call('ZREM', key(sym, set), id) end
  redis.call('HDEL', ALERTS, id)
  if redis.call('HINCRBY', SYMBOLS, sym, -1) <= 0 then redis.call('HDEL', SYMBOLS, sym) end
  count_uses(INUSE .. sym, cond, win, cool, -1)
end
if #ARGV == 4 then return old and 1 or 0 end
local sym = ARGV[6]
local _, cond, _, _, cool, _, win = string.match(ARGV[5], ROW)
redis.call('HSET', ALERTS, id, ARGV[5])
redis.call('ZADD', IDX .. sym .. ':' .. ARGV[7], ARGV[8], id)
redis.call('HINCRBY', SYMBOLS, sym, 1)
count_uses(INUSE .. sym, cond, win, cool, 1)
return 1
"""

# Drop a fired one-shot alert's mark (the slow path, once SQL says inactive).
# KEYS: 1 tb:alerts:fired  2 tb:alerts:version   ARGV: 1 id
_FORGET_LUA = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('INCR', KEYS[2]) -- a rebuild that read SQL before the update retries
return 1
"""

# Replace one symbol's index. The phase of each alert (which set it waits in) is read
# here, inside the same atomic step, so a tick can never slip between reading and writing;
# scores come fresh from SQL, but a cooldown keeps its end. A one-shot alert in
# tb:alerts:fired is skipped: SQL may not know yet that it fired.
# KEYS: 1 tb:alerts  2 tb:alerts:fired  3 tb:symbols  4 tb:inuse:S, then every set of the
#       symbol (_rebuild_keys)
# ARGV: 1 symbol  2 index prefix  3 re-arm prefix, then per alert: id row fired, where
#       fired = '1' for a recurring alert that has fired before
_REBUILD_LUA = _SETS_LUA + USES_LUA + """
local ALERTS, FIRED, SYMBOLS, INUSE = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local sym, IDX, REARM = ARGV[1], ARGV[2], ARGV[3]
-- condition, target, rearm, cooldown_ms, high, window_s (ROW_FIELDS)
local ROW = '^[^\\t]*\\t[^\\t]*\\t([^\\t]*)\\t([^\\t]*)\\t[^\\t]*\\t([^\\t]*)\\t[^\\t]*\\t'
  .. '([^\\t]*)\\t([^\\t]*)\\t([^\\t]*)\\t'
local function key(set) return (set[2] == 'i' and IDX or REARM) .. sym .. ':' .. set[3] end
local phase, cooling = {}, {} -- id -> the key it waits in; id -> its cooldown's end
for i = 5, #KEYS do
  local members = redis.call('ZRANGE', KEYS[i], 0, -1, 'WITHSCORES')
  for j = 1, #members, 2 do
    phase[members[j]] = KEYS[i]
    cooling[members[j]] = members[j + 1]
  end
  redis.call('DEL', KEYS[i])
end
redis.call('DEL', INUSE)
local keep, n = {}, 0
for i = 4, #ARGV, 3 do
  local id, row, fired = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('HEXISTS', FIRED, id) == 0 then
    local cond, target, rearm, cool, high, win = string.match(row, ROW)
    local sets, placed = sets_of(cond, win), false
    redis.call('HSET', ALERTS, id, row)
    for _, set in ipairs(sets) do
      local k = key(set)
      if phase[id] == k then
        local r = set[1]
        local score = (r == 'armed' and target) or (r == 'rearm' and rearm)
          or (r == 'rearm_hi' and string.format('%.17g', 2 * tonumber(target) - tonumber(rearm)))
          or ((r == 'in_lo' or r == 'below') and target)
          or ((r == 'in_hi' or r == 'above') and high) or (r == 'cool' and cooling[id]) or 0
        redis.call('ZADD', k, score, id)
        if r == 'in_lo' then redis.call('ZADD', key(sets[2]), high, id) end
        if r == 'in_hi' then redis.call('ZADD', key(sets[1]), target, id) end
        if r == 'rearm' and cond == 'crossing' then
          redis.call('ZADD', key(sets[3]), string.format('%.17g', 2 * tonumber(target)
            - tonumber(rearm)), id)
        end
        if r == 'rearm_hi' then redis.call('ZADD', key(sets[2]), rearm, id) end
        placed = true
        break
      end
    end
    if not placed then
      -- unknown here (e.g. after a wipe): a recurring alert that has fired waits to
      -- re-arm, so a rebuild never fires the same crossing twice; other crossings and
      -- channels find their state at the next trade; level and move alerts are armed
      local first = sets[1]
      if fired == '1' and first[1] == 'armed' then
        redis.call('ZADD', key(sets[2]), rearm, id)
        if cond == 'crossing' then
          redis.call('ZADD', key(sets[3]), string.format('%.17g', 2 * tonumber(target)
            - tonumber(rearm)), id)
        end
      elseif first[1] ~= 'armed' or string.sub(first[3], 1, 1) == 'x' then
        redis.call('ZADD', IDX .. sym .. ':pend', 0, id)
      else
        redis.call('ZADD', key(first), target, id)
      end
    end
    count_uses(INUSE, cond, win, cool, 1)
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
INDEX_PREFIXES = [keys.INDEX_PREFIX, keys.REARM_PREFIX, keys.kinds_in_use("")]


def idx_key(symbol, condition):
    return keys.index(symbol, SUFFIX[condition])


def rearm_key(symbol, condition):
    return keys.rearm(symbol, SUFFIX[condition])


def _rebuild_keys(symbol):
    """Every set an alert of the symbol can wait in (the roles of _SETS_LUA)."""
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
    return r.register_script(_INDEX_LUA)


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
            script(keys=_rebuild_keys(symbol), client=pipe, args=[
                symbol, keys.INDEX_PREFIX, keys.REARM_PREFIX, *by_symbol.get(symbol, [])])
        return sum(pipe.execute())  # without the fired one-shot alerts SQL does not know of


def _rebuild_args(alert):
    f = _fields(alert)
    fired = int(alert.mode == "recurring" and alert.last_fired_price is not None)
    return [alert.id, pack_row(f), fired]


def window_extreme(symbol, window_s, side, r=None):
    """(price, ms) of the lowest (`min`) or highest (`max`) trade in the symbol's trailing
    window as the matcher keeps it, or None while it keeps none (no move alert on it)."""
    head = (r or get_redis()).lindex(keys.window(symbol, window_s, side), 0)
    if not head:
        return None
    ms, price = head.split(":", 1)
    return float(price), int(ms)
