-- One tick, one atomic step: record the value, fire the alerts it meets, re-arm the
-- recurring ones it has moved back past. Layout: docs/architecture.md.
-- KEYS: 1 tb:price:S  2 up idx  3 up rearm  4 below idx  5 below rearm
--       6 tb:symbols  7 tb:alerts:fired  8 tb:fired  9 tb:spark:S  10 tb:alerts
--       11 tb:ticks:S (every key comes from webapp/keys.py)
-- ARGV: 1 symbol  2 'price' | 'volume'  3 value (number text)  4 ts ms  5 batch size
--       6 seq (trade id, 0 if unknown)  7 '1' on a continuation call of the same tick,
--       '2' on a retry of a tick whose call failed (it may have run, its reply lost)
--       8, 9 the prefixes of a user's stream and channel (tb:replay:, tb:user:)
-- Returns {more, nid...}; more = 1 when a batch was full and the caller should call again.
local sym, kind, vtext, tstext = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ts, batch = tonumber(tstext), tonumber(ARGV[5])
local seq = tonumber(ARGV[6]) or 0

-- Ticks must only move forward: a second listener replaying a tick (or one lagging
-- behind) would otherwise re-arm and fire the same crossing again.
if ARGV[7] ~= '1' then
  local f = kind == 'price' and 'mts' or 'mvts'
  local last = redis.call('HMGET', KEYS[1], f, f .. 'q')
  local lts, lseq = tonumber(last[1]), tonumber(last[2]) or 0
  -- (ts, trade id) order ticks; the id breaks ties within a millisecond
  if lts and (ts < lts or (ts == lts and seq > 0 and seq <= lseq)) then
    -- a retried tick that is the last one recorded did run: carry on with it, since a
    -- batch may be left (the same value again fires nothing twice)
    if not (ARGV[7] == '2' and ts == lts and seq == lseq) then
      return {0}
    end
  else
    redis.call('HSET', KEYS[1], f, tstext, f .. 'q', seq)
  end
end
local CHUNK = 1000 -- arguments per bulk call, well under Lua's unpack limit
local more = 0
local out = {0}
local released = {} -- alerts leaving the index: one HDEL and one refcount step at the end
local marked = {} -- fired one-shot alerts: id, ts pairs for tb:alerts:fired
local per_user = {} -- uid -> its key names

if kind == 'price' then
  local pub = tonumber(redis.call('HGET', KEYS[1], 'pub') or '0') or 0
  if ts - pub >= 1000 then
    -- live price for pages and the sparkline: at most about once a second per symbol
    redis.call('HSET', KEYS[1], 'price', vtext, 'ts', tstext, 'pub', tstext)
    redis.call('PUBLISH', KEYS[11],
      '{"symbol":"' .. sym .. '","price":' .. vtext .. ',"ts":' .. tstext .. '}')
    redis.call('RPUSH', KEYS[9], '[' .. tstext .. ',' .. vtext .. ']')
    redis.call('LTRIM', KEYS[9], -300, -1)
  else
    redis.call('HSET', KEYS[1], 'price', vtext, 'ts', tstext)
  end
else
  redis.call('HSET', KEYS[1], 'volume', vtext, 'vts', tstext)
end

local function bulk(cmd, key, list)
  for i = 1, #list, CHUNK do
    redis.call(cmd, key, unpack(list, i, math.min(i + CHUNK - 1, #list)))
  end
end

-- An alert is a row of tb:alerts (field = id), its fields joined by tabs, in the order of
-- ROW_FIELDS in webapp/alerts/index.py: user_id symbol condition target mode rearm
-- expires_at note. The note comes last and may hold tabs. ROW captures all but symbol and
-- condition (the index the id came from says those).
local ROW = '^([^\t]*)\t[^\t]*\t[^\t]*\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$'

-- The rows of ids, in their order (false where an alert has none), CHUNK ids per HMGET.
local function rows(ids)
  local out = {}
  for i = 1, #ids, CHUNK do
    local got = redis.call('HMGET', KEYS[10], unpack(ids, i, math.min(i + CHUNK - 1, #ids)))
    for j = 1, #got do out[i + j - 1] = got[j] end
  end
  return out
end

-- Members in range, removed by rank in the same step: O(log N + found), never a scan.
local function take(key, reverse)
  local ids
  if reverse then
    ids = redis.call('ZREVRANGEBYSCORE', key, '+inf', vtext, 'LIMIT', 0, batch)
  else
    ids = redis.call('ZRANGEBYSCORE', key, '-inf', vtext, 'LIMIT', 0, batch)
  end
  local n = #ids
  if n == 0 then return ids end
  if n >= batch then more = 1 end
  if reverse then
    redis.call('ZREMRANGEBYRANK', key, -n, -1)
  else
    redis.call('ZREMRANGEBYRANK', key, 0, n - 1)
  end
  return ids
end

local WORDS = {
  above = {' above ', ' traded at ', ', at or above your target '},
  below = {' below ', ' traded at ', ', at or below your target '},
  volume_above = {' 24h volume above ', ' 24h volume reached ', ', at or above your target '},
}

-- The parts of a notification that are the same for every alert one call fires.
local function template(cond)
  local w = WORDS[cond]
  local t = {cond = cond, ntype = cond == 'volume_above' and 'VOLUME_ALERT' or 'PRICE_ALERT'}
  t.title = sym .. w[1]
  t.message = sym .. w[2] .. vtext .. w[3]
  t.data = '{"symbol":"' .. sym .. '","condition":"' .. cond .. '","target":'
  t.data_tail = ',"price":' .. vtext .. ',"mode":"'
  t.json_b = ',"type":"' .. t.ntype .. '","priority":"normal","title":"'
  t.json_c = ',"created_at":' .. tstext .. ',"status":"unread","alert_id":"'
  return t
end

local function notify(t, id, uid, target, mode, note)
  local body -- the notification JSON after '{"user_id":', built in one concatenation
  if note and note ~= '' then
    local message = t.message .. target .. ' - ' .. note
    body = uid .. t.json_b .. t.title .. target .. '","message":' .. cjson.encode(message)
      .. t.json_c .. id .. '","data":' .. t.data .. target .. t.data_tail .. mode
      .. '","note":' .. cjson.encode(note) .. '}}'
  else
    body = uid .. t.json_b .. t.title .. target .. '","message":"' .. t.message .. target
      .. '"' .. t.json_c .. id .. '","data":' .. t.data .. target .. t.data_tail .. mode .. '"}}'
  end
  local u = per_user[uid]
  if not u then
    u = {replay = ARGV[8] .. uid, channel = ARGV[9] .. uid}
    per_user[uid] = u
  end
  -- the notification id is '<entry id>-<uid>' (entry ids are only unique per stream); the
  -- stored JSON leaves it out, the publish adds it. A new entry is unread by definition (read
  -- state is kept by the reader, webapp/inbox/scripts.py); entries past 7 days and the keys' TTL
  -- are the slow path's, off the hot path.
  local eid = redis.call('XADD', u.replay, '*', 'event', 'notification',
    'data', '{"user_id":' .. body)
  local nid = eid .. '-' .. uid
  redis.call('PUBLISH', u.channel, '{"id":"' .. eid .. '","event":"notification",'
    .. '"data":{"id":"' .. nid .. '","user_id":' .. body .. '}')
  out[#out + 1] = nid
  return nid .. ':' .. id .. ':' .. uid .. ':' .. mode
end

local function fire(idx, rearm, cond, reverse)
  local ids = take(idx, reverse)
  if #ids == 0 then return end
  local t = template(cond)
  local items, waiting = {}, {}
  for i, row in ipairs(rows(ids)) do
    if row then
      local id = ids[i]
      local uid, target, mode, back, exp, note = string.match(row, ROW)
      exp = tonumber(exp) or 0
      if exp > 0 and exp <= ts then
        released[#released + 1] = id
      else
        items[#items + 1] = notify(t, id, uid, target, mode, note)
        if mode == 'recurring' then
          waiting[#waiting + 1] = back
          waiting[#waiting + 1] = id
        else
          released[#released + 1] = id
          marked[#marked + 1] = id
          marked[#marked + 1] = tstext
        end
      end
    end
  end
  bulk('ZADD', rearm, waiting)
  if #items > 0 then
    -- the slow path: one entry per fired batch, written in this same atomic step
    redis.call('XADD', KEYS[8], '*', 'type', t.ntype, 'price', vtext, 'ts', tstext,
      'items', table.concat(items, ','))
  end
end

local function rearm_back(rearm, idx, reverse)
  local ids = take(rearm, reverse)
  local armed = {}
  for i, row in ipairs(rows(ids)) do
    if row then
      local id = ids[i]
      local _, target, _, _, exp = string.match(row, ROW)
      exp = tonumber(exp) or 0
      if exp > 0 and exp <= ts then
        released[#released + 1] = id
      else
        armed[#armed + 1] = target
        armed[#armed + 1] = id
      end
    end
  end
  bulk('ZADD', idx, armed)
end

if kind == 'price' then
  fire(KEYS[2], KEYS[3], 'above', false)
  fire(KEYS[4], KEYS[5], 'below', true)
  rearm_back(KEYS[3], KEYS[2], true)
  rearm_back(KEYS[5], KEYS[4], false)
else
  fire(KEYS[2], KEYS[3], 'volume_above', false)
  rearm_back(KEYS[3], KEYS[2], true)
end

-- SQL keeps a fired one-shot alert active until the slow path runs: the mark stops a
-- rebuild from arming it again meanwhile; the slow path removes it after its SQL update
bulk('HSET', KEYS[7], marked)
if #released > 0 then
  bulk('HDEL', KEYS[10], released)
  if redis.call('HINCRBY', KEYS[6], sym, -#released) <= 0 then redis.call('HDEL', KEYS[6], sym) end
end
out[1] = more
return out
