"""The inbox's Lua scripts: each change is one atomic step (layout: docs/architecture.md)."""

# KEYS: 1 tb:seq:notification  2 tb:inbox:U  3 tb:unread:U  4 tb:replay:U
# ARGV: 1 uid  2 created_at ms  3 expire-at ms  4 the notification JSON without its id
#       5 replay MAXLEN  6 zset TTL ms  7.. hash field/value pairs (without id)
# Same writes as the matcher's script; the zsets and the replay log also get a TTL so an
# abandoned user's keys go away (entries are pruned by score on read anyway).
STORE = """
local nid = tostring(redis.call('INCR', KEYS[1]))
local key = 'tb:n:' .. nid
redis.call('HSET', key, 'id', nid, unpack(ARGV, 7))
redis.call('PEXPIREAT', key, ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], nid)
redis.call('ZADD', KEYS[3], ARGV[2], nid)
local json = '{"id":"' .. nid .. '",' .. string.sub(ARGV[4], 2)
local eid = redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*',
  'event', 'notification', 'data', json)
for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[6]) end
redis.call('PUBLISH', 'tb:user:' .. ARGV[1],
  '{"id":"' .. eid .. '","event":"notification","data":' .. json .. '}')
return {nid, eid}
"""

# A page, newest first, after the cursor (score, member); ties at one score come in
# descending member order, as Redis sorts them. Prunes entries past the cutoff first.
# KEYS: 1 the zset to walk (inbox or unread)  2 tb:inbox:U  3 tb:unread:U
# ARGV: 1 max score ('+inf' or ms)  2 member after which to start at that score ('' = none)
#       3 cutoff ms (entries at or below it are expired)  4 limit  5 type ('' = any)
#       6 scan budget (entries examined at most)
# Returns {items, cursor_score, cursor_member, more}; each item is an HGETALL list.
LIST = """
local function field(h, name)
  for i = 1, #h, 2 do if h[i] == name then return h[i + 1] end end
end
local zkey, cutoff = KEYS[1], ARGV[3]
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', cutoff)
local maxs, after, limit, ftype = ARGV[1], ARGV[2], tonumber(ARGV[4]), ARGV[5]
local budget, maxn = tonumber(ARGV[6]), tonumber(ARGV[1])
local items, scanned, pos = {}, 0, 0
local cs, cm = false, false
local batch = math.max(limit + 1, 32)
while #items < limit and scanned < budget do
  local rows = redis.call('ZREVRANGEBYSCORE', zkey, maxs, '(' .. cutoff,
    'WITHSCORES', 'LIMIT', pos, batch)
  if #rows == 0 then break end
  for i = 1, #rows, 2 do
    local nid, score = rows[i], rows[i + 1]
    pos = pos + 1
    if not (after ~= '' and tonumber(score) == maxn and nid >= after) then
      scanned = scanned + 1
      local h = redis.call('HGETALL', 'tb:n:' .. nid)
      if #h == 0 then
        redis.call('ZREM', KEYS[2], nid)
        redis.call('ZREM', KEYS[3], nid)
        pos = pos - 1
      elseif ftype == '' or field(h, 'type') == ftype then
        items[#items + 1] = h
      end
      cs, cm = score, nid
      if #items >= limit or scanned >= budget then break end
    end
  end
  if #rows < 2 * batch then break end
end
local more = 0
if cs then
  local rest = redis.call('ZREVRANGEBYSCORE', zkey, maxs, '(' .. cutoff, 'LIMIT', pos, 1)
  if #rest > 0 then more = 1 end
end
return {items, cs, cm, more}
"""

# KEYS: 1 tb:n:N  2 tb:unread:U   ARGV: 1 uid  2 cutoff ms  3 nid
# Returns {unread count, HGETALL...} or {-1} when missing, expired or someone else's.
MARK_READ = """
local h = redis.call('HMGET', KEYS[1], 'user_id', 'created_at', 'status')
if not h[1] or h[1] ~= ARGV[1] or tonumber(h[2]) <= tonumber(ARGV[2]) then return {-1} end
if h[3] ~= 'read' then
  redis.call('HSET', KEYS[1], 'status', 'read')
  redis.call('ZREM', KEYS[2], ARGV[3])
end
local count = redis.call('ZCOUNT', KEYS[2], '(' .. ARGV[2], '+inf')
if h[3] ~= 'read' then
  redis.call('PUBLISH', 'tb:user:' .. ARGV[1], '{"event":"unread","data":' .. count .. '}')
end
local out = {count}
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do out[#out + 1] = v end
return out
"""

# KEYS: 1 tb:n:N  2 tb:inbox:U  3 tb:unread:U   ARGV: 1 uid  2 cutoff ms  3 nid
# Returns 1 when deleted, 0 when missing, expired or someone else's.
DELETE = """
local h = redis.call('HMGET', KEYS[1], 'user_id', 'created_at')
if not h[1] or h[1] ~= ARGV[1] or tonumber(h[2]) <= tonumber(ARGV[2]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[3])
if redis.call('ZREM', KEYS[3], ARGV[3]) == 1 then
  local count = redis.call('ZCOUNT', KEYS[3], '(' .. ARGV[2], '+inf')
  redis.call('PUBLISH', 'tb:user:' .. ARGV[1], '{"event":"unread","data":' .. count .. '}')
end
return 1
"""

# KEYS: 1 tb:unread:U   ARGV: 1 uid  2 cutoff ms   Returns how many turned read.
MARK_ALL_READ = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[2], '+inf')
for _, nid in ipairs(ids) do
  local key = 'tb:n:' .. nid
  if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'status', 'read') end
end
redis.call('DEL', KEYS[1])
if #ids > 0 then
  redis.call('PUBLISH', 'tb:user:' .. ARGV[1], '{"event":"unread","data":0}')
end
return #ids
"""
