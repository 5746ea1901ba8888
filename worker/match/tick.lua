-- The match script. One tick, one atomic step: record the value, fire the alerts it meets,
-- re-arm the recurring ones it has moved back past. Layout and semantics:
-- docs/architecture.md. It is four files, which worker/matcher.py joins in this order into
-- one chunk (so a local of one is seen by those after it, and Redis's line numbers in an
-- error count through them): tick.lua (the tick's state and order, a quiet tick's shortcut),
-- notify.lua (alert rows, claims, the notifications' text and writes), kinds.lua (each kind
-- of alert), finish.lua (the tick's sequence, the writes gathered, the answer).
-- Two modes (ARGV[10]). `inline`, on one Redis: each notification is written to its user's
-- stream and published here, and the slow path's entries go to tb:{fired}, all in this one
-- step. `outbox`, on a Redis Cluster, where a script may touch one slot only: this step
-- touches the symbol's keys alone and records the fired batch in the symbol's outbox; the
-- matcher then writes the users' side in their own slots (worker/outbox.py).
-- KEYS (every one from webapp/keys.py, in worker/matcher.py's order):
--   1 tb:price:S  2 up idx (above, or vol on volume ticks)  3 its rearm  4 below idx
--   5 below rearm  6 tb:outbox:S  7 tb:alerts:fired:S  8 tb:{fired} (inline mode; the
--   outbox again in outbox mode)  9 tb:spark:S  10 tb:alerts:S (the rows)
--   11 tb:ticks:S  12 xup  13 xup rearm  14 xdown  15 xdown rearm  16 xany
--   17 xany rearm (low side)  18 xany rearm (high side)  19 chin_lo  20 chin_hi  21 chab
--   22 chbe  23 pend  24 cool (coolvol on volume ticks)  25 tb:inuse:S (what to look at)
--   26.. per window (WINDOWS below, in order) six keys: pctup, pctup rearm, pctdown,
--   pctdown rearm, the window's min list, its max list. A symbol with level alerts only
--   may be called with 13: keys 1 to 11, then 24 and 25 (see `levels_only` below).
-- ARGV: 1 symbol  2 'price' | 'volume'  3 value (number text)  4 ts ms  5 batch size
--       6 seq (trade id, 0 if unknown)  7 '1' on a continuation call of the same tick,
--       '2' on a retry of a tick whose call failed (it may have run, its reply lost)
--       8, 9 the prefixes of a user's stream and channel (tb:replay:{, tb:user:{), closed
--       by '}'  10 'inline' | 'outbox'  11 the publish command (PUBLISH, or SPUBLISH)
-- Returns {more, left, ...}: more = 1 when a batch was full and the caller should call
-- again, 2 when a 13-key call did nothing as the symbol has other kinds, 3 when it did
-- nothing as another tick's storm is open (then: that tick's ts, seq and value: the caller
-- finishes it with continuations, then calls again); left = the symbol's indexed alerts
-- after some left the index, else -1. Then, inline: the new notification ids; outbox: the
-- outbox entry's id and its `notes` (or nothing).
-- `uses` and `count_uses` come first (webapp/alerts/scripts.py USES).
local sym, kind, vtext, tstext = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ts, batch = tonumber(tstext), tonumber(ARGV[5])
local seq = tonumber(ARGV[6]) or 0
local p = tonumber(vtext)
local WINDOWS = {60, 300, 900, 3600, 14400, 86400}
local WINDOW_NAMES = {['60'] = '1m', ['300'] = '5m', ['900'] = '15m', ['3600'] = '1h',
  ['14400'] = '4h', ['86400'] = '24h'}

-- A symbol whose alerts are all level alerts (above, below, volume; cooldowns too) is called
-- with 13 keys, not all 61 (worker/matcher.py): naming a key costs Redis and the listener
-- about as much as a quiet tick's own work. Its 12th and 13th (cooldowns, kinds in use) go to
-- their places here, so the rest of the script finds every key where a full call puts it.
local levels_only = #KEYS == 13
if levels_only then
  KEYS[24], KEYS[25], KEYS[12], KEYS[13] = KEYS[12], KEYS[13], nil, nil
end

-- one read says which kinds this symbol has: a quiet tick probes only those
local in_use = {}
local uses_got = redis.call('HGETALL', KEYS[25])
for i = 1, #uses_got, 2 do in_use[uses_got[i]] = tonumber(uses_got[i + 1]) end
local crossings, channels_used = (in_use.x or 0) > 0, (in_use.ch or 0) > 0
local moves = false -- move alerts on some window
for field, n in pairs(in_use) do
  if WINDOW_NAMES[field] and n > 0 then moves = true end
end
if levels_only and (crossings or channels_used or moves) then
  return {2, -1} -- nothing done: the caller calls again with every key
end

-- The symbol's tick state in one read: this kind's last (ts, trade id), and for a price the
-- trade before and when the price was last published. This tick's fields go in one HSET.
local f = kind == 'price' and 'mts' or 'mvts'
local state = redis.call('HMGET', KEYS[1], f, f .. 'q', 'price', 'pp', 'pub', f .. 'open')
local record = {}

-- A storm (a tick firing more than a batch: continuations follow) is open from its first
-- call to its last, marked with its tick. A second listener on the stream (a lease handed
-- over mid-storm) must not record a newer trade meanwhile: the storm's crossings need its
-- trade before, and alerts it fired must not be re-armed before it ends. So a newer tick
-- finishes the open storm first (its caller continues it: answer 3), and a continuation
-- finding its storm finished by such a caller does nothing.
local open = state[6]
local function tick_mark() return tstext .. ':' .. ARGV[6] .. ':' .. vtext end
local this = (open or ARGV[7] == '1') and tick_mark() -- made only when a storm may be open
if ARGV[7] == '1' and open ~= this then return {0, -1} end

-- Ticks must only move forward: a second listener replaying a tick (or one lagging
-- behind) would otherwise re-arm and fire the same crossing again.
local new_tick = ARGV[7] ~= '1' -- false on a continuation, and on a retry that already ran
if ARGV[7] ~= '1' then
  local lts, lseq = tonumber(state[1]), tonumber(state[2]) or 0
  -- (ts, trade id) order ticks; the id breaks ties within a millisecond
  if lts and (ts < lts or (ts == lts and seq > 0 and seq <= lseq)) then
    -- a retried tick that is the last one recorded did run: carry on with it, since a
    -- batch may be left (the same value again fires nothing twice)
    if not (ARGV[7] == '2' and ts == lts and seq == lseq) then
      return {0, -1}
    end
    new_tick = false
  else
    record = {f, tstext, f .. 'q', seq}
  end
  if open and open ~= this then
    local ots, oseq, ovalue = string.match(open, '^(%d+):(%d+):(.+)$')
    if ots and tonumber(ots) == lts and tonumber(oseq) == lseq then
      return {3, -1, ots, oseq, ovalue}
    end
    -- not the last trade recorded (code that knew no mark recorded a newer one), or
    -- unreadable: a storm no longer to finish
    redis.call('HDEL', KEYS[1], f .. 'open')
    open = false
  end
end

local INLINE, PUBLISH = ARGV[10] == 'inline', ARGV[11]

-- A quiet tick, by far the most common: a symbol with no cooldown, crossing, channel or move
-- alert, whose level indexes hold nothing this value meets (none to fire, none to re-arm:
-- the bounds of fire_levels and rearm_back below). Recorded below, it is done then, before
-- the rest of the script is set up (its functions cost more than the tick): the rest would
-- find nothing and give this same reply. What a quiet price tick records goes to the
-- replicas but not the append-only file, but for the one that publishes (about one a second
-- a symbol, sparkline sample included): under `appendfsync always` each write there is a
-- wait for the disk before the answer. So a Redis restarted from its file (a crash, or a
-- stop: the private Redis saves no snapshot) has each symbol's market as it was up to a
-- second before; a level alert reads no trade before, and the next trade records it again.
local pub = tonumber(state[5] or '0') or 0
local quiet = not open and (in_use.cd or 0) == 0 and not (crossings or channels_used or moves)
  and redis.call('ZCOUNT', KEYS[2], '-inf', vtext) == 0
  and redis.call('ZCOUNT', KEYS[3], vtext, '+inf') == 0
  and (kind ~= 'price' or (redis.call('ZCOUNT', KEYS[4], vtext, '+inf') == 0
    and redis.call('ZCOUNT', KEYS[5], '-inf', vtext) == 0))
if quiet and kind == 'price' and ts - pub < 1000 then redis.set_repl(redis.REPL_REPLICA) end
-- the trade before this one: crossings fire for levels between it and this one. A
-- continuation (or a retry that ran) finds it where the first call of the tick left it.
local prev = nil
if kind == 'price' then
  local before = state[4] -- pp: as the first call of this tick found it
  if new_tick then before = state[3] end
  prev = tonumber(before)
  local n = #record
  record[n + 1], record[n + 2], record[n + 3], record[n + 4] = 'price', vtext, 'ts', tstext
  if new_tick then -- kept as it came, so a continuation or a retry reads the same one
    -- (no newer trade is recorded while a storm is open)
    record[n + 5], record[n + 6] = 'pp', before or ''
  end
  if ts - pub >= 1000 then
    -- live price for pages and the sparkline: at most about once a second per symbol
    record[#record + 1], record[#record + 2] = 'pub', tstext
    redis.call(PUBLISH, KEYS[11],
      '{"symbol":"' .. sym .. '","price":' .. vtext .. ',"ts":' .. tstext .. '}')
    redis.call('RPUSH', KEYS[9], '[' .. tstext .. ',' .. vtext .. ']')
    redis.call('LTRIM', KEYS[9], -300, -1)
  end
else
  local n = #record
  record[n + 1], record[n + 2], record[n + 3], record[n + 4] = 'volume', vtext, 'vts', tstext
end
redis.call('HSET', KEYS[1], unpack(record))
if quiet then return {0, -1} end

