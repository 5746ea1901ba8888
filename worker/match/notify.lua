-- The match script, part 2 (after tick.lua; see there): what a call gathers, alert rows
-- and their claim, and each notification's text and writes.

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

-- A number as a person reads it: the fewest digits, of 15 to 17, that read back the same
-- (172.46, where num gives 172.46000000000001). Scores keep num's.
local function shown(x)
  local s = string.format('%.15g', x)
  if tonumber(s) ~= x then
    s = string.format('%.16g', x)
    if tonumber(s) ~= x then s = num(x) end
  end
  return s
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
      .. ' (the trade before: ' .. shown(prev) .. ')',
    ',"previous":' .. shown(prev) .. ',"direction":"' .. dir .. '"')
end

