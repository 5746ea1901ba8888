-- The match script, part 3 (after notify.lua; see tick.lua): each kind of alert, fired
-- and re-armed by this tick: levels, crossings, cooldowns, moves over a window, channels.

-- Level alerts are what a storm is made of: their rows are split straight into locals
-- (no table an alert) and re-arms go in one bulk ZADD. The rest of a row: notify.lua's ROW.
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
          .. shown(extreme),
        ',"window":"' .. name .. '","move_pct":' .. shown(move) .. ',"' .. side .. '":'
          .. shown(extreme) .. ',"' .. side .. '_at":' .. extreme_ms)
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
