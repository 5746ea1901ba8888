-- The match script, part 4 (after kinds.lua; see tick.lua): the tick's sequence, then the
-- writes gathered on the way, and the answer.

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
