"""The inbox's Lua scripts: each change is one atomic step (layout: docs/architecture.md).

A user's notifications are the entries of their stream `tb:replay:U`: the entry id is the
SSE id and the cursor, and the notification id is `<entry id>-<uid>`. The entry's `data` is
the notification JSON without its `id`. A notification lives 7 days from its entry id's time.

A notification is unread until the user reads it, so writing one writes nothing else (the
matcher's hot path stays one XADD). Read state is kept on the reading side:
  tb:read:U      zset, entries read one by one (score: the entry's ms), all after the mark
  tb:readmark:U  hash {id, n}: "mark all read" made every entry up to `id` read; `n` counts
                 the entries still in the stream up to `id`
so the unread count is XLEN - n - ZCARD(read), O(1), once expired entries are trimmed.
Every script takes KEYS 1 tb:replay:U  2 tb:read:U  3 tb:readmark:U  4 tb:user:U (the channel),
from webapp/keys.py, and as its last ARGV the publish command (webapp/core/pubsub.py command():
SPUBLISH on a Redis Cluster, so a message stays on the user's shard; PUBLISH on one Redis).
"""

# The shared part: entry id order, the exact trim that keeps `n` right, the count.
_COMMON = """
local S, R, M, C = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local PUBLISH = ARGV[#ARGV]
local function split(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function after(a, b) -- stream id a comes after stream id b
  local am, as = split(a)
  local bm, bs = split(b)
  return am > bm or (am == bm and as > bs)
end
-- Entries created at or before `cutoff` (ms) are gone; a trim must be exact to keep n right.
local function trim(cutoff)
  local removed = redis.call('XTRIM', S, 'MINID', string.format('%d', cutoff + 1))
  redis.call('ZREMRANGEBYSCORE', R, '-inf', cutoff)
  local mark = redis.call('HGET', M, 'id')
  if redis.call('XLEN', S) == 0 then
    redis.call('DEL', R, M)
  elseif mark and split(mark) <= cutoff then
    redis.call('DEL', M) -- everything up to the mark was trimmed
  elseif mark and removed > 0 then
    redis.call('HINCRBY', M, 'n', -removed) -- all of them were up to the mark
  end
  return removed
end
local function unread_count()
  return redis.call('XLEN', S) - tonumber(redis.call('HGET', M, 'n') or '0')
    - redis.call('ZCARD', R)
end
local function is_unread(id, mark)
  return (not mark or after(id, mark)) and not redis.call('ZSCORE', R, id)
end
local function entry_data(id)
  local rows = redis.call('XRANGE', S, id, id)
  if #rows == 0 then return nil end
  local f = rows[1][2]
  for i = 1, #f, 2 do if f[i] == 'data' then return f[i + 1] end end
end
local function publish_count()
  redis.call(PUBLISH, C, '{"event":"unread","data":' .. unread_count() .. '}')
end
-- What a change did, for the user's pages open elsewhere (the `changed` event, applied by
-- static/js/live.js): `field` is read or deleted, `eids` the entries (their notification ids
-- are '<entry id>-<uid>'); sent before the new count.
local function publish_change(field, eids, uid)
  local tail = '-' .. uid
  redis.call(PUBLISH, C, '{"event":"changed","data":{"' .. field .. '":["'
    .. table.concat(eids, tail .. '","') .. tail .. '"]}}')
end
local function keep(ttl)
  for _, key in ipairs({S, R, M}) do redis.call('PEXPIRE', key, ttl) end
end
-- A write's trim and TTLs, a third of a store's work, done at most once a minute (a tenth of
-- a shorter TTL) however many stores a storm brings a user: the keys are kept that much past
-- the TTL, so a TTL above it says they were, and no entry written meanwhile outlives its keys.
-- Readers still trim every time, so what they count is exact.
local function tend(cutoff, ttl)
  ttl = tonumber(ttl)
  if redis.call('PTTL', S) > ttl then return end
  trim(cutoff)
  keep(ttl + math.min(60000, math.floor(ttl / 10)))
end
"""

# ARGV: 1 uid  2 created_at ms  3 the notification JSON without its id  4 cutoff ms (real
#       clock)  5 key TTL ms
# The entry id takes the created time when it can (a caller replaying the past, tests), else
# Redis picks the next id; the TTL lets an abandoned user's keys go.
STORE = _COMMON + """
local eid = redis.pcall('XADD', S, ARGV[2] .. '-0', 'event', 'notification', 'data', ARGV[3])
if type(eid) == 'table' then
  eid = redis.call('XADD', S, '*', 'event', 'notification', 'data', ARGV[3])
end
tend(tonumber(ARGV[4]), ARGV[5])
redis.call(PUBLISH, C, '{"id":"' .. eid .. '","event":"notification",'
  .. '"data":{"id":"' .. eid .. '-' .. ARGV[1] .. '",' .. string.sub(ARGV[3], 2) .. '}')
return eid
"""

# STORE for several notifications of one user, in order, with one trim and one TTL refresh.
# ARGV: 1 uid  2 created_at ms  3 cutoff ms  4 key TTL ms  5.. the notifications' JSON
# Returns their entry ids, in order.
# On one Redis (never on a cluster: another slot) the call may also queue their slow steps
# (webapp/notify/slowsteps.py), saving a round trip: KEYS 5 the routed stream  6 its kick
# flag; before the publish command, ARGV also ends with the request id, the batch size and
# the flag's TTL (s). The stream gets batches of at most that size, as JSON lists of the
# notifications with their ids, and the flag is set unless set.
# Returns {entry ids, 1 if this call set the flag, else 0}.
_STORE_MANY = """
local routed, last = KEYS[5], #ARGV - 1
if routed then last = #ARGV - 4 end
local request_id, size, kick_ttl = ARGV[#ARGV - 3], tonumber(ARGV[#ARGV - 2]), ARGV[#ARGV - 1]
local eids, first, batch = {}, ARGV[2] .. '-0', {}
local function add_batch()
  redis.call('XADD', routed, '*', 'batch', '[' .. table.concat(batch, ',') .. ']',
    'request_id', request_id)
  batch = {}
end
for i = 5, last do
  local eid = first and redis.pcall('XADD', S, first, 'event', 'notification', 'data', ARGV[i])
  if not eid or type(eid) == 'table' then
    eid = redis.call('XADD', S, '*', 'event', 'notification', 'data', ARGV[i])
  end
  first = nil
  eids[#eids + 1] = eid
  local n = '{"id":"' .. eid .. '-' .. ARGV[1] .. '",' .. string.sub(ARGV[i], 2)
  redis.call(PUBLISH, C, '{"id":"' .. eid .. '","event":"notification","data":' .. n .. '}')
  if routed then
    batch[#batch + 1] = n
    if #batch == size then add_batch() end
  end
end
tend(tonumber(ARGV[3]), ARGV[4])
if not routed then return eids end
if #batch > 0 then add_batch() end
local kicked = redis.call('SET', KEYS[6], '1', 'NX', 'EX', kick_ttl)
return {eids, kicked and 1 or 0}
"""
STORE_MANY = _COMMON + _STORE_MANY

# STORE_MANY for a request with an Idempotency-Key, once per user. A request that failed
# part way (Redis down, or one master of several failing over) ran some users' calls; its
# retry, with the same tag (webapp/notify/idempotency.py), writes nothing again for those,
# and answers the entry ids their call made (routed: their batches went with it). Who gets a
# strategy's or everyone's events is read again on the retry: a user's part of another size
# than the one recorded is written as new. KEYS: STORE_MANY's, then tb:took:{uid}, a sorted
# set of '<tag>=<entry ids>' scored by the request's first try's ms (`at`), kept a day.
# ARGV: the tag, `at`, then STORE_MANY's.
STORE_MANY_ONCE = """
local took, tag, at = table.remove(KEYS), table.remove(ARGV, 1), table.remove(ARGV, 1)
""" + _COMMON + """
local prefix, day = tag .. '=', 86400000
local count = #ARGV - 4 - (KEYS[5] and 4 or 1) -- the user's notifications in this call
for _, member in ipairs(redis.call('ZRANGE', took, at, at, 'BYSCORE')) do
  if string.sub(member, 1, #prefix) == prefix then
    local eids = {}
    for eid in string.gmatch(string.sub(member, #prefix + 1), '[^,]+') do
      eids[#eids + 1] = eid
    end
    if #eids == count then
      if KEYS[5] then return {eids, 0} end
      return eids
    end
  end
end
local function store()
""" + _STORE_MANY + """
end
local result = store()
redis.call('ZADD', took, at, prefix .. table.concat(KEYS[5] and result[1] or result, ','))
redis.call('ZREMRANGEBYSCORE', took, '-inf', '(' .. (tonumber(at) - day))
redis.call('PEXPIRE', took, day)
return result
"""

# ARGV: 1 cutoff ms  2 key TTL ms ('' = leave it)
# Returns {entries removed, unread count, the newest entry id or ''}.
TRIM = _COMMON + """
local removed = trim(tonumber(ARGV[1]))
if ARGV[2] ~= '' then keep(ARGV[2]) end
local newest = redis.call('XREVRANGE', S, '+', '-', 'COUNT', 1)[1]
return {removed, unread_count(), newest and newest[1] or ''}
"""

# What a reconnecting stream missed, each with its read state now, and the unread count.
# ARGV: 1 cutoff ms  2 the first entry id to replay, inclusive ('' = replay nothing)
# Returns {unread count, rows}; each row is {id, event, data JSON, 'unread' | 'read'}.
REPLAY = _COMMON + """
trim(tonumber(ARGV[1]))
local rows, mark = {}, redis.call('HGET', M, 'id')
if ARGV[2] ~= '' then
  for _, row in ipairs(redis.call('XRANGE', S, ARGV[2], '+')) do
    local id, f, event, data = row[1], row[2], 'notification', '{}'
    for i = 1, #f, 2 do
      if f[i] == 'event' then event = f[i + 1] elseif f[i] == 'data' then data = f[i + 1] end
    end
    rows[#rows + 1] = {id, event, data, is_unread(id, mark) and 'unread' or 'read'}
  end
end
return {unread_count(), rows}
"""

# A page, newest first, after the cursor (an entry id, exclusive).
# ARGV: 1 cursor ('' = from the newest)  2 cutoff ms  3 limit  4 type ('' = any)
#       5 scan budget (entries examined at most)  6 '1' = unread only
# Returns {items, cursor, more}; each item is {id, data JSON, 'unread' | 'read'}.
LIST = _COMMON + """
trim(tonumber(ARGV[2]))
local limit, ftype, budget = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local unread_only, mark = ARGV[6] == '1', redis.call('HGET', M, 'id')
local items, scanned, last = {}, 0, false
local top = ARGV[1] == '' and '+' or '(' .. ARGV[1]
local batch = math.max(limit + 1, 32)
while #items < limit and scanned < budget do
  local rows = redis.call('XREVRANGE', S, top, '-', 'COUNT', batch)
  if #rows == 0 then break end
  for _, row in ipairs(rows) do
    local id, f = row[1], row[2]
    scanned, last, top = scanned + 1, id, '(' .. id
    local data
    for i = 1, #f, 2 do if f[i] == 'data' then data = f[i + 1] end end
    local ok, n = pcall(cjson.decode, data or '')
    if ok and type(n) == 'table' and (ftype == '' or n.type == ftype) then
      local status = is_unread(id, mark) and 'unread' or 'read'
      if not unread_only or status == 'unread' then items[#items + 1] = {id, data, status} end
    end
    if #items >= limit or scanned >= budget then break end
  end
  if #rows < batch then break end
end
local more = 0
if last and #redis.call('XREVRANGE', S, '(' .. last, '-', 'COUNT', 1) > 0 then more = 1 end
return {items, last, more}
"""

# ARGV: 1 uid  2 cutoff ms  3 entry id  4 key TTL ms
# Returns {unread count, data JSON} or {-1} when missing, expired or someone else's.
MARK_READ = _COMMON + """
trim(tonumber(ARGV[2]))
local data = entry_data(ARGV[3])
if not data then return {-1} end
if is_unread(ARGV[3], redis.call('HGET', M, 'id')) then
  redis.call('ZADD', R, string.match(ARGV[3], '^%d+'), ARGV[3])
  keep(ARGV[4])
  publish_change('read', {ARGV[3]}, ARGV[1])
  publish_count()
end
return {unread_count(), data}
"""

# ARGV: 1 uid  2 cutoff ms  3 entry id
# Returns 1 when deleted, 0 when missing, expired or someone else's.
DELETE = _COMMON + """
trim(tonumber(ARGV[2]))
if not entry_data(ARGV[3]) then return 0 end
local mark = redis.call('HGET', M, 'id')
local unread = is_unread(ARGV[3], mark)
redis.call('XDEL', S, ARGV[3])
if mark and not after(ARGV[3], mark) then
  redis.call('HINCRBY', M, 'n', -1)
else
  redis.call('ZREM', R, ARGV[3])
end
publish_change('deleted', {ARGV[3]}, ARGV[1])
if unread then publish_count() end
return 1
"""

# ARGV: 1 uid  2 cutoff ms  3 key TTL ms   Returns how many turned read.
MARK_ALL_READ = _COMMON + """
trim(tonumber(ARGV[2]))
local n = unread_count()
if n > 0 then
  local newest = redis.call('XREVRANGE', S, '+', '-', 'COUNT', 1)[1][1]
  redis.call('HSET', M, 'id', newest, 'n', redis.call('XLEN', S))
  redis.call('DEL', R)
  keep(ARGV[3])
  -- every entry up to the newest, in one field: not one id each
  redis.call(PUBLISH, C, '{"event":"changed","data":{"read_upto":"' .. newest .. '-' .. ARGV[1]
    .. '"}}')
  publish_count()
end
return n
"""

# "Mark all read" with the inbox filtered to one type: those entries are read one by one.
# A long inbox is gone through in steps, each an atomic call of its own over at most
# `budget` entries after the mark (so never one read before: that would count it twice).
# ARGV: 1 uid  2 cutoff ms  3 key TTL ms  4 the type  5 the entry id to go on after ('' =
#       from the mark)  6 entries examined at most
# Returns {how many turned read, the last entry examined ('' = none), 1 if more may follow,
#          the unread count}.
MARK_TYPE_READ = _COMMON + """
trim(tonumber(ARGV[2]))
local mark, ftype, budget, from = redis.call('HGET', M, 'id'), ARGV[4], tonumber(ARGV[6]), ARGV[5]
if mark and (from == '' or after(mark, from)) then from = mark end
local rows = redis.call('XRANGE', S, from == '' and '-' or '(' .. from, '+', 'COUNT', budget)
local n, turned = 0, {}
for _, row in ipairs(rows) do
  local id, f = row[1], row[2]
  if not redis.call('ZSCORE', R, id) then
    local data
    for i = 1, #f, 2 do if f[i] == 'data' then data = f[i + 1] end end
    local ok, note = pcall(cjson.decode, data or '')
    if ok and type(note) == 'table' and note.type == ftype then
      redis.call('ZADD', R, string.match(id, '^%d+'), id)
      n = n + 1
      turned[n] = id
    end
  end
end
if n > 0 then
  keep(ARGV[3])
  publish_change('read', turned, ARGV[1])
  publish_count()
end
return {n, #rows > 0 and rows[#rows][1] or '', #rows == budget and 1 or 0, unread_count()}
"""
