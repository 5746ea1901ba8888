"""The alert index's Lua scripts (the matcher's own is worker/match/). Layout and
semantics: docs/architecture.md, "Alert matching"; the row's fields: ROW_FIELDS in index.py.
"""

# The sets an alert of a kind can be in, as (role, index or rearm, suffix): a script that
# removes or rebuilds an alert looks in these only. Roles: `armed` (scored by the level),
# `rearm` (by the re-arm threshold; `rearm_hi` by the other side of a crossing's),
# `pend`, `cool` (by the ms its cooldown ends), and a channel's `in_lo`, `in_hi`, `above`,
# `below` (by its low or high).
SETS = """
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
# with a cooldown. The match script shares this function (worker/matcher.py prepends it).
USES = """
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

# Index or unindex one alert of one symbol atomically, in the symbol's slot; the symbol
# registry (tb:symbols) and the alert -> symbol map are kept by index.py around it.
# An edit that keeps what the alert watches (symbol, kind, level, high, window) keeps its
# phase: an alert waiting to re-arm, cooling down or inside a channel stays so, and one
# crossing never fires twice because of an edit. Anything else is placed as new.
# KEYS: 1 tb:alerts:{S}  2 tb:alerts:fired:{S}  3 tb:alerts:version:{S}  4 tb:inuse:{S},
#       then every set of the symbol (index.symbol_keys): the script touches no other key
# ARGV: 1 index prefix  2 re-arm prefix  3 the tag's end (keys.TAG_END)  4 symbol  5 id,
#       then to index it: 6 row  7 the set it starts in (index suffix)  8 its score
#       9 '1' to resume
# Returns {1 if it changed the index else 0, the symbol's indexed alerts}.
INDEX = SETS + USES + """
local ALERTS, FIRED, VERSION, INUSE = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local IDX, REARM, TAG_END, sym, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local unindex = #ARGV == 5
-- symbol, condition, target, rearm, cooldown_ms, high, window_s (ROW_FIELDS)
local ROW = '^[^\\t]*\\t([^\\t]*)\\t([^\\t]*)\\t([^\\t]*)\\t[^\\t]*\\t([^\\t]*)\\t[^\\t]*\\t'
  .. '([^\\t]*)\\t([^\\t]*)\\t([^\\t]*)\\t'
local function key(set) return (set[2] == 'i' and IDX or REARM) .. sym .. TAG_END .. set[3] end
local function done(changed) return {changed, redis.call('HLEN', ALERTS)} end
redis.call('INCR', VERSION) -- a rebuild racing with this change starts again
-- A one-shot alert the matcher fired stays marked until the slow path has it inactive in
-- SQL: an edit meanwhile must not arm it again (one crossing, one notification). A resume
-- or an unindex is SQL's newer word and clears the mark.
if unindex or ARGV[9] == '1' then
  redis.call('HDEL', FIRED, id)
elseif redis.call('HEXISTS', FIRED, id) == 1 then
  return done(0)
end
local old = redis.call('HGET', ALERTS, id)
if old and not unindex then
  local _, o_cond, o_target, _, o_cool, o_high, o_win = string.match(old, ROW)
  local _, n_cond, n_target, n_rearm, n_cool, n_high, n_win = string.match(ARGV[6], ROW)
  if o_cond == n_cond and o_target == n_target and o_high == n_high and o_win == n_win then
    redis.call('HSET', ALERTS, id, ARGV[6])
    count_uses(INUSE, o_cond, o_win, o_cool, -1)
    count_uses(INUSE, n_cond, n_win, n_cool, 1)
    for _, set in ipairs(sets_of(n_cond, n_win)) do -- a new buffer moves the re-arm point
      local k = key(set)
      if set[1] == 'rearm' then
        redis.call('ZADD', k, 'XX', n_rearm, id)
      elseif set[1] == 'rearm_hi' then
        redis.call('ZADD', k, 'XX', string.format('%.17g', 2 * tonumber(n_target)
          - tonumber(n_rearm)), id)
      end
    end
    return done(1)
  end
end
if old then
  local _, cond, _, _, cool, _, win = string.match(old, ROW)
  for _, set in ipairs(sets_of(cond, win)) do redis.call('ZREM', key(set), id) end
  redis.call('HDEL', ALERTS, id)
  count_uses(INUSE, cond, win, cool, -1)
end
if unindex then return done(old and 1 or 0) end
local _, cond, _, _, cool, _, win = string.match(ARGV[6], ROW)
redis.call('HSET', ALERTS, id, ARGV[6])
redis.call('ZADD', IDX .. sym .. TAG_END .. ARGV[7], ARGV[8], id)
count_uses(INUSE, cond, win, cool, 1)
return done(1)
"""

# Drop a fired one-shot alert's mark (the slow path, once SQL says inactive).
# KEYS: 1 tb:alerts:fired:{S}  2 tb:alerts:version:{S}   ARGV: 1 id
FORGET = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('INCR', KEYS[2]) -- a rebuild that read SQL before the update retries
return 1
"""

# Replace one symbol's index. The phase of each alert (which set it waits in) is read
# here, inside the same atomic step, so a tick can never slip between reading and writing;
# scores come fresh from SQL, but a cooldown keeps its end. A one-shot alert in
# tb:alerts:fired:{S} is skipped: SQL may not know yet that it fired. Nothing is written
# (-1 is returned) if the symbol's version is not the one read before SQL was: an index
# change came in between, and the caller reads SQL again.
# KEYS: as INDEX's (index.symbol_keys)
# ARGV: 1-4 as INDEX's  5 the version read, then per alert: id row fired,
#       where fired = '1' for a recurring alert that has fired before
# Returns the alerts indexed.
REBUILD = SETS + USES + """
local ALERTS, FIRED, VERSION, INUSE = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local IDX, REARM, TAG_END, sym = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if (redis.call('GET', VERSION) or '0') ~= ARGV[5] then return -1 end
-- condition, target, rearm, cooldown_ms, high, window_s (ROW_FIELDS)
local ROW = '^[^\\t]*\\t[^\\t]*\\t([^\\t]*)\\t([^\\t]*)\\t[^\\t]*\\t([^\\t]*)\\t[^\\t]*\\t'
  .. '([^\\t]*)\\t([^\\t]*)\\t([^\\t]*)\\t'
local function key(set) return (set[2] == 'i' and IDX or REARM) .. sym .. TAG_END .. set[3] end
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
for i = 6, #ARGV, 3 do
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
        redis.call('ZADD', IDX .. sym .. TAG_END .. 'pend', 0, id)
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
return n
"""
