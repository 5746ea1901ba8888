"""The inbox's Lua scripts: each change is one atomic step (layout: docs/architecture.md).

A user's notifications are the entries of their stream `tb:replay:U`: the entry id is the
SSE id and the cursor, and the notification id is `<entry id>-<uid>`. The entry's `data` is
the notification JSON without its `id`; read state is membership of `tb:unread:U`.
"""

# Every script that reads one entry: its data, or nil when missing or past the cutoff.
_ENTRY = """
local function entry(key, id, cutoff)
  local rows = redis.call('XRANGE', key, id, id)
  if #rows == 0 then return nil end
  local f = rows[1][2]
  for i = 1, #f, 2 do
    if f[i] == 'data' then
      local ok, n = pcall(cjson.decode, f[i + 1])
      if ok and type(n) == 'table' and (tonumber(n.created_at) or 0) > tonumber(cutoff) then
        return f[i + 1], n
      end
      return nil
    end
  end
end
"""

# KEYS: 1 tb:unread:U  2 tb:replay:U
# ARGV: 1 uid  2 created_at ms  3 the notification JSON without its id  4 MINID (ms)
#       5 key TTL ms
# Same writes as the matcher's script; the keys also get a TTL so an abandoned user's keys
# go away (entries are filtered by created_at on read anyway).
STORE = """
local eid = redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[4], '*',
  'event', 'notification', 'data', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], eid)
for i = 1, 2 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
redis.call('PUBLISH', 'tb:user:' .. ARGV[1], '{"id":"' .. eid .. '","event":"notification",'
  .. '"data":{"id":"' .. eid .. '-' .. ARGV[1] .. '",' .. string.sub(ARGV[3], 2) .. '}')
return eid
"""

# A page, newest first, after the cursor (an entry id, exclusive).
# KEYS: 1 tb:replay:U  2 tb:unread:U
# ARGV: 1 cursor ('' = from the newest)  2 cutoff ms (entries created at or before it are
#       expired)  3 limit  4 type ('' = any)  5 scan budget (entries examined at most)
#       6 '1' = unread only
# Returns {items, cursor, more}; each item is {id, data JSON, 'unread' | 'read'}.
LIST = _ENTRY + """
local skey, ukey, cutoff = KEYS[1], KEYS[2], tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', ukey, '-inf', cutoff)
local limit, ftype, budget = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local unread_only = ARGV[6] == '1'
local items, scanned, last = {}, 0, false
local top = ARGV[1] == '' and '+' or '(' .. ARGV[1]
local batch = math.max(limit + 1, 32)
while #items < limit and scanned < budget do
  local rows = redis.call('XREVRANGE', skey, top, '-', 'COUNT', batch)
  if #rows == 0 then break end
  for _, row in ipairs(rows) do
    local id, f = row[1], row[2]
    scanned, last, top = scanned + 1, id, '(' .. id
    local data
    for i = 1, #f, 2 do if f[i] == 'data' then data = f[i + 1] end end
    local ok, n = pcall(cjson.decode, data or '')
    if ok and type(n) == 'table' and (tonumber(n.created_at) or 0) > cutoff
        and (ftype == '' or n.type == ftype) then
      local status = redis.call('ZSCORE', ukey, id) and 'unread' or 'read'
      if not unread_only or status == 'unread' then items[#items + 1] = {id, data, status} end
    end
    if #items >= limit or scanned >= budget then break end
  end
  if #rows < batch then break end
end
local more = 0
if last and #redis.call('XREVRANGE', skey, '(' .. last, '-', 'COUNT', 1) > 0 then more = 1 end
return {items, last, more}
"""

# KEYS: 1 tb:replay:U  2 tb:unread:U   ARGV: 1 uid  2 cutoff ms  3 entry id
# Returns {unread count, data JSON} or {-1} when missing, expired or someone else's.
MARK_READ = _ENTRY + """
local data = entry(KEYS[1], ARGV[3], ARGV[2])
if not data then return {-1} end
local changed = redis.call('ZREM', KEYS[2], ARGV[3])
local count = redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[2], '+inf')
if changed == 1 then
  redis.call('PUBLISH', 'tb:user:' .. ARGV[1], '{"event":"unread","data":' .. count .. '}')
end
return {count, data}
"""

# KEYS: 1 tb:replay:U  2 tb:unread:U   ARGV: 1 uid  2 cutoff ms  3 entry id
# Returns 1 when deleted, 0 when missing, expired or someone else's.
DELETE = _ENTRY + """
if not entry(KEYS[1], ARGV[3], ARGV[2]) then return 0 end
redis.call('XDEL', KEYS[1], ARGV[3])
if redis.call('ZREM', KEYS[2], ARGV[3]) == 1 then
  local count = redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[2], '+inf')
  redis.call('PUBLISH', 'tb:user:' .. ARGV[1], '{"event":"unread","data":' .. count .. '}')
end
return 1
"""

# KEYS: 1 tb:unread:U   ARGV: 1 uid  2 cutoff ms   Returns how many turned read.
MARK_ALL_READ = """
local n = redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[2], '+inf')
redis.call('DEL', KEYS[1])
if n > 0 then
  redis.call('PUBLISH', 'tb:user:' .. ARGV[1], '{"event":"unread","data":0}')
end
return n
"""
