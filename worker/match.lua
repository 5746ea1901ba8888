-- One tick, one atomic step: record the value, fire the alerts it meets, re-arm the
-- recurring ones it has moved back past. Layout and semantics: docs/architecture.md.
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
-- the trade before this one: crossings fire for levels between it and this one. A
-- continuation (or a retry that ran) finds it where the first call of the tick left it.
local prev = nil
if kind == 'price' then
  local before = state[4] -- pp: as the first call of this tick found it
  if new_tick then before = state[3] end
  prev = tonumber(before)
  local pub = tonumber(state[5] or '0') or 0
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

-- A quiet tick, by far the most common: a symbol with no cooldown, crossing, channel or move
-- alert, whose level indexes hold nothing this value meets (none to fire, none to re-arm:
-- the bounds of fire_levels and rearm_back below). Recorded above, it is done here, before
-- the rest of the script is set up (its functions cost more than the tick): the rest would
-- find nothing and give this same reply.
if not open and (in_use.cd or 0) == 0 and not (crossings or channels_used or moves)
    and redis.call('ZCOUNT', KEYS[2], '-inf', vtext) == 0
    and redis.call('ZCOUNT', KEYS[3], vtext, '+inf') == 0
    and (kind ~= 'price' or (redis.call('ZCOUNT', KEYS[4], vtext, '+inf') == 0
      and redis.call('ZCOUNT', KEYS[5], '-inf', vtext) == 0)) then
  return {0, -1}
end

local CHUNK = 1000 -- arguments per bulk call, well under Lua's unpack limit
local more = 0
local out = {0, -1}
local released = {} -- alerts leaving the index: one HDEL and one refcount step at the end
local released_uses = {} -- (condition, window, cooldown) of each released alert
local marked = {} -- fired one-shot alerts: id, ts pairs for tb:alerts:fired
local per_user = {} -- uid -> its key names
local fired_items = {} -- notification type -> slow-path items
local notes = {} -- outbox mode: one line a notification, 'uid TAB type TAB alert TAB mode TAB body'

local function num(x)
  return string.format('%.17g', x)
end

local function bulk(cmd, key, list)
  for i = 1, #list, CHUNK do
    redis.call(cmd, key, unpack(list, i, math.min(i + CHUNK - 1, #list)))
  end
end

-- An alert is a row of tb:alerts (field = id), its fields joined by tabs, in the order of
-- ROW_FIELDS in webapp/alerts/index.py: user_id symbol condition target mode rearm
-- expires_at cooldown_ms high window_s note. The note comes last and may hold tabs.
local ROW = '^([^\t]*)\t[^\t]*\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)'
  .. '\t([^\t]*)\t([^\t]*)\t(.*)$'

local function parse(id, row)
  if not row then return nil end
  local uid, cond, target, mode, back, exp, cool, high, win, note = string.match(row, ROW)
  if not uid then return nil end
  return {id = id, uid = uid, cond = cond, target = target, mode = mode, rearm = back,
    exp = tonumber(exp) or 0, cool = tonumber(cool) or 0, high = high, win = win, note = note}
end

-- The alerts of ids, in their order (nil where an alert has no row), CHUNK ids per HMGET.
local function alerts_of(ids)
  local out_ = {}
  for i = 1, #ids, CHUNK do
    local got = redis.call('HMGET', KEYS[10], unpack(ids, i, math.min(i + CHUNK - 1, #ids)))
    -- false, not nil, for a missing row: ipairs must not stop there
    for j = 1, #got do out_[i + j - 1] = parse(ids[i + j - 1], got[j] or nil) or false end
  end
  return out_
end

-- Members scored from lo to hi (bounds as Redis takes them, '(' for exclusive), removed in
-- the same step: O(log N + found), never a scan. At most `batch`: more is flagged.
local function take(key, lo, hi)
  local ids
  if hi == '+inf' then -- from the top: removed by rank
    ids = redis.call('ZREVRANGEBYSCORE', key, hi, lo, 'LIMIT', 0, batch)
  else
    ids = redis.call('ZRANGEBYSCORE', key, lo, hi, 'LIMIT', 0, batch)
  end
  local n = #ids
  if n == 0 then return ids end
  if n >= batch then more = 1 end
  if hi == '+inf' then
    redis.call('ZREMRANGEBYRANK', key, -n, -1)
  elseif lo == '-inf' then
    redis.call('ZREMRANGEBYRANK', key, 0, n - 1)
  else
    bulk('ZREM', key, ids)
  end
  return ids
end

local COUNTED = {crossing_up = true, crossing_down = true, crossing = true,
  channel_exit = true, channel_enter = true}
local function release(a)
  released[#released + 1] = a.id
  if a.win ~= '' or a.cool > 0 or COUNTED[a.cond] then -- it counts in tb:inuse
    released_uses[#released_uses + 1] = a
  end
end

-- A level alert (no window, not COUNTED) counts in tb:inuse only with a cooldown: its
-- table is made only then, which spares a storm of one-shot alerts a table each.
local function release_level(id, cond, cool)
  if cool > 0 then
    release({id = id, cond = cond, win = '', cool = cool})
  else
    released[#released + 1] = id
  end
end

local function expired(a)
  if a.exp > 0 and a.exp <= ts then
    release(a)
    return true
  end
  return false
end

local function window_index(win)
  for i, w in ipairs(WINDOWS) do if tostring(w) == win then return i end end
end

local function wkey(win, slot) -- slot: 1 pctup 2 its rearm 3 pctdown 4 its rearm 5 min 6 max
  return KEYS[25 + (window_index(win) - 1) * 6 + slot]
end

-- Where a recurring alert waits after firing (or after its cooldown): past its re-arm
-- threshold it is armed again.
local function to_rearm(a)
  local c = a.cond
  if c == 'above' or c == 'volume_above' then
    redis.call('ZADD', KEYS[3], a.rearm, a.id)
  elseif c == 'below' then
    redis.call('ZADD', KEYS[5], a.rearm, a.id)
  elseif c == 'crossing_up' then
    redis.call('ZADD', KEYS[13], a.rearm, a.id)
  elseif c == 'crossing_down' then
    redis.call('ZADD', KEYS[15], a.rearm, a.id)
  elseif c == 'crossing' then -- a buffer away from the level, on either side
    redis.call('ZADD', KEYS[17], a.rearm, a.id)
    redis.call('ZADD', KEYS[18], num(2 * tonumber(a.target) - tonumber(a.rearm)), a.id)
  elseif c == 'pct_up' then
    redis.call('ZADD', wkey(a.win, 2), a.rearm, a.id)
  elseif c == 'pct_down' then
    redis.call('ZADD', wkey(a.win, 4), a.rearm, a.id)
  else -- channels: their state is found again at the end of the tick, firing nothing
    redis.call('ZADD', KEYS[23], 0, a.id)
  end
end

local function after_firing(a)
  if a.mode ~= 'recurring' then
    release(a)
    marked[#marked + 1] = a.id
    marked[#marked + 1] = tstext
  elseif a.cool > 0 then
    redis.call('ZADD', KEYS[24], ts + a.cool, a.id)
  else
    to_rearm(a)
  end
end

local DATA_HEAD = {} -- condition -> the data's first fields up to the target
local PRICE_TAIL = ',"price":' .. vtext .. ',"mode":"'
local function emit(id, uid, cond, target, mode, note, ntype, title, message, extra, tail)
  local head = DATA_HEAD[cond]
  if not head then
    head = '{"symbol":"' .. sym .. '","condition":"' .. cond .. '","target":'
    DATA_HEAD[cond] = head
  end
  -- One concatenation makes one string, and Lua hashes every string it makes, byte by
  -- byte: a storm makes hundreds of thousands, so a notification's text is built in one
  -- expression (`tail`, a level alert's target, ends both its title and its message).
  -- Inline, that is the stored entry itself, published as it is; the outbox's notes carry
  -- it without its head (worker/outbox.py).
  local quote, note_field, mtail = '"', '', tail
  if note ~= '' then
    message, quote, mtail = cjson.encode(message .. tail .. ' - ' .. note), '', ''
    note_field = ',"note":' .. cjson.encode(note)
  end
  local body = (INLINE and '{"user_id":' or '') .. uid .. ',"type":"' .. ntype
    .. '","priority":"normal","title":"' .. title .. tail .. '","message":' .. quote
    .. message .. mtail .. quote .. ',"created_at":' .. tstext .. ',"status":"unread",'
    .. '"alert_id":"' .. id .. '","data":' .. head .. target .. PRICE_TAIL .. mode .. '"'
    .. extra .. note_field .. '}}'
  if not INLINE then -- JSON text holds no raw tab or newline: cjson escapes the note's
    notes[#notes + 1] = uid .. '\t' .. ntype .. '\t' .. id .. '\t' .. mode .. '\t' .. body
    return
  end
  local u = per_user[uid]
  if not u then
    u = {replay = ARGV[8] .. uid .. '}', channel = ARGV[9] .. uid .. '}'}
    per_user[uid] = u
  end
  -- the notification id is '<entry id>-<uid>' (entry ids are only unique per stream); the
  -- stored JSON leaves it out, and so does the publish: the hub adds it as the inbox's reader
  -- does (webapp/live/fanout.py Message.parse), sparing Lua a third copy of the text. A new
  -- entry is unread by definition (read state is kept by the reader,
  -- webapp/inbox/scripts.py); entries past 7 days and the keys' TTL are the slow path's,
  -- off the hot path.
  local eid = redis.call('XADD', u.replay, '*', 'event', 'notification', 'data', body)
  local nid = eid .. '-' .. uid
  redis.call(PUBLISH, u.channel, '{"id":"' .. eid .. '","event":"notification","data":' .. body
    .. '}')
  out[#out + 1] = nid
  local items = fired_items[ntype]
  if not items then
    items = {}
    fired_items[ntype] = items
  end
  items[#items + 1] = nid .. ':' .. id .. ':' .. uid .. ':' .. mode
end

-- title and message hold only the symbol, numbers and our words, so they go in as they are;
-- a note is the user's text and is encoded. `extra`: more data fields, as JSON text.
local function notify(a, ntype, title, message, extra)
  emit(a.id, a.uid, a.cond, a.target, a.mode, a.note, ntype, title, message, extra, '')
  after_firing(a)
end

-- Wording: the title says what happened, the message the figures that made it fire.
local LEVEL_WORDS = { -- condition -> type, title and message up to the target
  above = {'PRICE_ALERT', sym .. ' above ', sym .. ' traded at ' .. vtext
    .. ', at or above your target '},
  below = {'PRICE_ALERT', sym .. ' below ', sym .. ' traded at ' .. vtext
    .. ', at or below your target '},
  volume_above = {'VOLUME_ALERT', sym .. ' 24h volume above ', sym .. ' 24h volume reached '
    .. vtext .. ', at or above your target '},
}
local function crossing_alert(a, up)
  local dir = up and 'up' or 'down'
  notify(a, 'PRICE_ALERT', sym .. ' crossed ' .. dir .. ' through ' .. a.target,
    sym .. ' traded at ' .. vtext .. ', crossing ' .. dir .. ' through ' .. a.target
      .. ' (the trade before: ' .. num(prev) .. ')',
    ',"previous":' .. num(prev) .. ',"direction":"' .. dir .. '"')
end

-- Level alerts are what a storm is made of: their rows are split straight into locals
-- (no table an alert) and re-arms go in one bulk ZADD. The rest of a row: match.lua's ROW.
local LEVEL_ROW = '^([^\t]*)\t[^\t]*\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)'
  .. '\t([^\t]*)\t[^\t]*\t[^\t]*\t(.*)$'
local function fire_levels(key, rearm, lo, hi)
  local ids = take(key, lo, hi)
  local waiting = {}
  for i = 1, #ids, CHUNK do
    local rows = redis.call('HMGET', KEYS[10], unpack(ids, i, math.min(i + CHUNK - 1, #ids)))
    for j = 1, #rows do
      local row = rows[j]
      local uid, cond, target, mode, back, exp, cool, note
      if row then uid, cond, target, mode, back, exp, cool, note = string.match(row, LEVEL_ROW) end
      if uid then
        local id = ids[i + j - 1]
        exp, cool = tonumber(exp) or 0, tonumber(cool) or 0
        if exp > 0 and exp <= ts then
          release_level(id, cond, cool)
        else
          local w = LEVEL_WORDS[cond]
          emit(id, uid, cond, target, mode, note, w[1], w[2], w[3], '', target)
          if mode ~= 'recurring' then
            release_level(id, cond, cool)
            marked[#marked + 1] = id
            marked[#marked + 1] = tstext
          elseif cool > 0 then
            redis.call('ZADD', KEYS[24], ts + cool, id)
          else
            waiting[#waiting + 1] = back
            waiting[#waiting + 1] = id
          end
        end
      end
    end
  end
  bulk('ZADD', rearm, waiting)
end

local function fire_crossings(key, lo, hi, up)
  local ids = take(key, lo, hi)
  for _, a in ipairs(alerts_of(ids)) do
    if a and not expired(a) then crossing_alert(a, up) end
  end
end

-- Recurring alerts the value has moved back past: armed again at their level.
local function rearm_back(rearm, idx, lo, hi, other)
  local ids = take(rearm, lo, hi)
  if #ids == 0 then return end
  if other then bulk('ZREM', other, ids) end
  local armed = {}
  for _, a in ipairs(alerts_of(ids)) do
    if a and not expired(a) then
      armed[#armed + 1] = a.target
      armed[#armed + 1] = a.id
    end
  end
  bulk('ZADD', idx, armed)
end

-- Where an armed alert of a level or crossing kind waits, and whether the trade before
-- this one had moved back past its re-arm point.
local ARMED = {above = 2, below = 4, crossing_up = 12, crossing_down = 14, crossing = 16}
local function was_rearmed(a)
  local back = tonumber(a.rearm)
  if a.cond == 'below' or a.cond == 'crossing_down' then return prev >= back end
  if a.cond == 'crossing' then return prev <= back or prev >= 2 * tonumber(a.target) - back end
  return prev <= back
end

-- Cooldowns that ended (at or before this trade): the alert is armed if the market had
-- already moved back past its re-arm point by the trade before, else it waits as after
-- any firing. So a trade that crosses right after a cooldown counts.
local cooled_windows = {} -- windows with a move alert back from its cooldown on this tick
local function end_cooldowns()
  local ids = take(KEYS[24], '-inf', tstext)
  for _, a in ipairs(alerts_of(ids)) do
    if a and not expired(a) then
      if kind == 'price' and prev and ARMED[a.cond] and was_rearmed(a) then
        redis.call('ZADD', KEYS[ARMED[a.cond]], a.target, a.id)
      else
        to_rearm(a)
        if a.win ~= '' then cooled_windows[a.win] = true end
      end
    end
  end
end

-- A trailing window's extreme in O(1) amortised: a list of `ms:price`, at most one a
-- second, monotonic from the head (the extreme) to the tail; `worse(old)` says the new
-- trade makes an old entry useless. Entries at or before ts - window leave from the head.
local function slide(key, window_ms, worse)
  local push = true
  while true do
    local tail = redis.call('LINDEX', key, -1)
    if not tail then break end
    local tms, tp = string.match(tail, '^(%d+):(.+)$')
    if not worse(tonumber(tp)) then
      -- a better trade earlier in this second stands for the second: one entry a second
      push = math.floor(tonumber(tms) / 1000) ~= math.floor(ts / 1000)
      break
    end
    redis.call('RPOP', key)
  end
  if push then redis.call('RPUSH', key, tstext .. ':' .. vtext) end
  while true do
    local head = redis.call('LINDEX', key, 0)
    if not head then return nil end
    local hms, hp = string.match(head, '^(%d+):(.+)$')
    if tonumber(hms) > ts - window_ms then return tonumber(hp), hms end
    redis.call('LPOP', key)
  end
end

local function move_alerts(win, up, move, prev_move, extreme, extreme_ms)
  local armed, rearm = wkey(win, up and 1 or 3), wkey(win, up and 2 or 4)
  local m = num(move)
  -- an alert back from its cooldown re-arms on the trade before's move (against this
  -- window), as a level alert re-arms on the trade before's price
  if prev_move and cooled_windows[win] then
    rearm_back(rearm, armed, '(' .. num(prev_move), '+inf')
  end
  local ids = take(armed, '-inf', num(move + 1e-9)) -- 10.000000000000002 % is 10 %
  local name, dir = WINDOW_NAMES[win] or (win .. 's'), up and 'up' or 'down'
  local side = up and 'low' or 'high'
  for _, a in ipairs(alerts_of(ids)) do
    if a and not expired(a) then
      notify(a, 'PRICE_ALERT', sym .. ' ' .. dir .. ' ' .. a.target .. '% in ' .. name,
        sym .. ' traded at ' .. vtext .. ', ' .. string.format('%.2f', move) .. '% '
          .. (up and 'above' or 'below') .. ' the ' .. name .. ' ' .. side .. ' of '
          .. num(extreme),
        ',"window":"' .. name .. '","move_pct":' .. num(move) .. ',"' .. side .. '":'
          .. num(extreme) .. ',"' .. side .. '_at":' .. extreme_ms)
    end
  end
  rearm_back(rearm, armed, '(' .. m, '+inf')
end

local function windows(in_use)
  for win, n in pairs(in_use) do
    if window_index(win) and n > 0 then
      local ms = tonumber(win) * 1000
      local low, low_ms, high, high_ms
      if new_tick then
        low, low_ms = slide(wkey(win, 5), ms, function(old) return old >= p end)
        high, high_ms = slide(wkey(win, 6), ms, function(old) return old <= p end)
      else
        local h = redis.call('LINDEX', wkey(win, 5), 0)
        local g = redis.call('LINDEX', wkey(win, 6), 0)
        if h then low_ms, low = string.match(h, '^(%d+):(.+)$') low = tonumber(low) end
        if g then high_ms, high = string.match(g, '^(%d+):(.+)$') high = tonumber(high) end
      end
      if low and low > 0 then
        move_alerts(win, true, (p / low - 1) * 100, prev and (prev / low - 1) * 100, low, low_ms)
      end
      if high and high > 0 then
        move_alerts(win, false, (1 - p / high) * 100, prev and (1 - prev / high) * 100, high,
          high_ms)
      end
    end
  end
end

-- Channels: an alert is inside [low, high] (in chin_lo by low and chin_hi by high), above
-- it (chab, by high) or below it (chbe, by low); exit alerts fire on leaving, enter alerts
-- on coming in. A jump over the whole channel in one trade is not an entry.
local function channel_alert(a, entered, dir)
  local band = a.target .. '-' .. a.high
  if entered then
    notify(a, 'PRICE_ALERT', sym .. ' entered ' .. band,
      sym .. ' traded at ' .. vtext .. ', inside your channel ' .. band,
      ',"low":' .. a.target .. ',"high":' .. a.high)
  else
    notify(a, 'PRICE_ALERT', sym .. ' left ' .. band,
      sym .. ' traded at ' .. vtext .. ', ' .. dir .. ' your channel ' .. band,
      ',"low":' .. a.target .. ',"high":' .. a.high .. ',"direction":"' .. dir .. '"')
  end
end

local function place_channel(a)
  if p > tonumber(a.high) then
    redis.call('ZADD', KEYS[21], a.high, a.id)
  elseif p < tonumber(a.target) then
    redis.call('ZADD', KEYS[22], a.target, a.id)
  else
    redis.call('ZADD', KEYS[19], a.target, a.id)
    redis.call('ZADD', KEYS[20], a.high, a.id)
  end
end

local function left_channel(ids, other, dir)
  if #ids == 0 then return end
  bulk('ZREM', other, ids)
  for _, a in ipairs(alerts_of(ids)) do
    if a and not expired(a) then
      if a.cond == 'channel_exit' then channel_alert(a, false, dir) else place_channel(a) end
    end
  end
end

local function outside_channel(ids)
  for _, a in ipairs(alerts_of(ids)) do
    if a and not expired(a) then
      local inside = p >= tonumber(a.target) and p <= tonumber(a.high)
      if inside and a.cond == 'channel_enter' then
        channel_alert(a, true)
      else
        place_channel(a)
      end
    end
  end
end

local function channels()
  left_channel(take(KEYS[20], '-inf', '(' .. vtext), KEYS[19], 'above')
  left_channel(take(KEYS[19], '(' .. vtext, '+inf'), KEYS[20], 'below')
  outside_channel(take(KEYS[21], vtext, '+inf'))
  outside_channel(take(KEYS[22], '-inf', vtext))
end

-- Alerts whose state starts with a trade (new crossings and channels, channels after
-- firing): placed by this one, which never fires them.
local function settle_pending()
  local ids = redis.call('ZRANGE', KEYS[23], 0, -1)
  if #ids == 0 then return end
  redis.call('DEL', KEYS[23])
  for _, a in ipairs(alerts_of(ids)) do
    if a and not expired(a) then
      if a.cond == 'crossing_up' then
        redis.call('ZADD', KEYS[12], a.target, a.id)
      elseif a.cond == 'crossing_down' then
        redis.call('ZADD', KEYS[14], a.target, a.id)
      elseif a.cond == 'crossing' then
        redis.call('ZADD', KEYS[16], a.target, a.id)
      else
        place_channel(a)
      end
    end
  end
end

if (in_use.cd or 0) > 0 then end_cooldowns() end
if kind == 'price' then
  fire_levels(KEYS[2], KEYS[3], '-inf', vtext)
  fire_levels(KEYS[4], KEYS[5], vtext, '+inf')
  if crossings and prev and p > prev then
    fire_crossings(KEYS[12], '(' .. num(prev), vtext, true)
    fire_crossings(KEYS[16], '(' .. num(prev), vtext, true)
  elseif crossings and prev and p < prev then
    fire_crossings(KEYS[14], vtext, '(' .. num(prev), false)
    fire_crossings(KEYS[16], vtext, '(' .. num(prev), false)
  end
  windows(in_use)
  if channels_used then channels() end
  rearm_back(KEYS[3], KEYS[2], vtext, '+inf')
  rearm_back(KEYS[5], KEYS[4], '-inf', vtext)
  if crossings then
    rearm_back(KEYS[13], KEYS[12], vtext, '+inf')
    rearm_back(KEYS[15], KEYS[14], '-inf', vtext)
    rearm_back(KEYS[17], KEYS[16], vtext, '+inf', KEYS[18])
    rearm_back(KEYS[18], KEYS[16], '-inf', vtext, KEYS[17])
  end
  -- the tick's last call: new crossings and channels are never fired by it
  if more == 0 and (crossings or channels_used) then settle_pending() end
else
  fire_levels(KEYS[2], KEYS[3], '-inf', vtext)
  rearm_back(KEYS[3], KEYS[2], vtext, '+inf')
end

for ntype, items in pairs(fired_items) do
  -- the slow path: one entry per type and call, written in this same atomic step
  redis.call('XADD', KEYS[8], '*', 'type', ntype, 'price', vtext, 'ts', tstext,
    'symbol', sym, 'items', table.concat(items, ','))
end
-- SQL keeps a fired one-shot alert active until the slow path runs: the mark stops a
-- rebuild from arming it again meanwhile; the slow path removes it after its SQL update
bulk('HSET', KEYS[7], marked)
local left = -1
if #released > 0 then
  bulk('HDEL', KEYS[10], released)
  for _, a in ipairs(released_uses) do count_uses(KEYS[25], a.cond, a.win, a.cool, -1) end
  left = redis.call('HLEN', KEYS[10]) -- the caller keeps tb:symbols right
end
if #notes > 0 then
  -- the batch, durable in the symbol's slot until its users' side is written
  local text = table.concat(notes, '\n')
  out[3] = redis.call('XADD', KEYS[6], '*', 'price', vtext, 'ts', tstext, 'notes', text)
  out[4] = text
end
if more == 1 and open ~= (this or tick_mark()) then
  redis.call('HSET', KEYS[1], f .. 'open', this or tick_mark())
elseif more == 0 and open and open == this then
  redis.call('HDEL', KEYS[1], f .. 'open') -- the storm's last call
end
out[1], out[2] = more, left
return out
