"""The matcher's second step on a Redis Cluster: a fired batch's users' side, exactly once.

The match script runs in the symbol's slot, so in `outbox` mode it writes no user's key: it records
the batch in the symbol's outbox stream (tb:outbox:{S}), durable and atomic with the claim.
`Outbox.complete` then writes each notified user's stream entry and publishes it in the user's
slot (DELIVER, one call per user, pipelined by node), hands the slow path its entries (COMMIT,
in tb:{fired}'s slot) and drops the outbox entry; the listener does these last two in a thread
of their own (HandOff), so its next tick waits for neither. Each step may run again — a retry,
a lost reply, two listeners, the sweep finishing a batch a dead listener left — and changes
nothing the second time: DELIVER remembers per user the batches it wrote (tb:applied:{uid})
and answers the same entry ids; COMMIT remembers for a day the batches it handed on.
"""

import logging
import queue
import threading

from redis.exceptions import RedisError

from webapp import clock, keys
from webapp.alerts.index import prune_symbol
from webapp.core import pubsub
from webapp.core.outage import Outage
from webapp.core.scripting import run_all

log = logging.getLogger(__name__)

# A user's batches are remembered a day: a retry or a sweep comes within seconds, or once
# Redis is back from an outage.
APPLIED_KEPT_MS = 24 * 3600 * 1000
COMMITTED_KEPT_MS = 24 * 3600 * 1000
SWEEP_AGE_MS = 5000  # a batch older than this was left by a listener that died or lost Redis
SWEEP_COUNT = 100  # batches per symbol and sweep
DEFAULT_HAND_OFF_QUEUE = 1000  # batches delivered, waiting for their COMMIT
HAND_OFF_CLOSE_S = 5.0

# KEYS: 1 the user's stream  2 the user's channel  3 tb:applied:{uid}
# ARGV: 1 publish command  2 batch  3 its ms  4 batches from before this ms are forgotten
#       5 ms the set is kept, then each notification's body (its JSON after '{"user_id":').
# Returns the entry ids, joined by commas.
# tb:applied:{uid} is a sorted set of '<batch>=<entry ids>' scored by the batch's ms (its
# outbox entry id's), so finding a batch and forgetting the old ones cost a lookup, however
# many batches the user had that day.
DELIVER = """
local at, prefix = ARGV[3], ARGV[2] .. '='
local ok, found = pcall(redis.call, 'ZRANGE', KEYS[3], at, at, 'BYSCORE')
if not ok and redis.call('TYPE', KEYS[3]).ok == 'hash' then
  -- written as a hash (batch -> ids) before December 2026: made a sorted set, once
  local old = redis.call('HGETALL', KEYS[3])
  redis.call('DEL', KEYS[3])
  for i = 1, #old, 2 do
    redis.call('ZADD', KEYS[3], string.match(old[i], '^(%d+)'), old[i] .. '=' .. old[i + 1])
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
  found = redis.call('ZRANGE', KEYS[3], at, at, 'BYSCORE')
elseif not ok then  -- the error, as redis.call would have raised it
  return redis.error_reply(type(found) == 'table' and found.err or tostring(found))
end
for _, member in ipairs(found) do
  if string.sub(member, 1, #prefix) == prefix then return string.sub(member, #prefix + 1) end
end
local eids = {}
for i = 6, #ARGV do
  -- published as stored, as the match script's inline mode does: the hub adds the id
  local data = '{"user_id":' .. ARGV[i]
  local eid = redis.call('XADD', KEYS[1], '*', 'event', 'notification', 'data', data)
  redis.call(ARGV[1], KEYS[2], '{"id":"' .. eid .. '","event":"notification","data":' .. data
    .. '}')
  eids[#eids + 1] = eid
end
local text = table.concat(eids, ',')
redis.call('ZADD', KEYS[3], at, prefix .. text)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
return text
"""

# KEYS: 1 tb:{fired}  2 tb:{fired}:batches
# ARGV: 1 batch  2 now (ms)  3 how long batches are remembered (ms)  4 price  5 tick ms
#       6 symbol, then per notification type: type, items (as the match script's inline mode)
COMMIT = """
if redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
for i = 7, #ARGV, 2 do
  redis.call('XADD', KEYS[1], '*', 'type', ARGV[i], 'price', ARGV[4], 'ts', ARGV[5],
    'symbol', ARGV[6], 'items', ARGV[i + 1])
end
return 1
"""


class Outbox:
    """Completes fired batches recorded by the match script in outbox mode."""

    def __init__(self, redis):
        self.redis = redis
        self._deliver = redis.register_script(DELIVER)
        self._commit = redis.register_script(COMMIT)
        self._publish = pubsub.command(redis)

    def complete(self, symbol, entry_id, price, ts, notes):
        """Write a batch's users' side and hand it to the slow path; returns its notification
        ids in the batch's order. Safe to call again for the same batch."""
        nids, commit = self.deliver(symbol, entry_id, price, ts, notes)
        self.hand_on(symbol, entry_id, commit)
        return nids

    def deliver(self, symbol, entry_id, price, ts, notes):
        """Write a batch's users' side; returns its notification ids in the batch's order
        and what `hand_on` needs. Safe to call again for the same batch."""
        batch, batch_ms, now = f"{entry_id}:{symbol}", int(entry_id.split("-")[0]), clock.now_ms()
        if batch_ms < now - APPLIED_KEPT_MS:
            log.error("matcher: batch %s of %s is older than its users remember: a user who "
                      "had it may get it twice", entry_id, symbol)
        by_user = {}  # uid -> [(position, type, alert id, mode, body)]
        lines = notes.split("\n")
        for i, line in enumerate(lines):
            uid, ntype, alert_id, mode, body = line.split("\t", 4)
            by_user.setdefault(uid, []).append((i, ntype, alert_id, mode, body))
        calls = [
            ([keys.replay(uid), keys.user_channel(uid), keys.applied(uid)],
             [self._publish, batch, batch_ms, now - APPLIED_KEPT_MS, APPLIED_KEPT_MS,
              *(n[4] for n in notes_)])
            for uid, notes_ in by_user.items()]
        # one user (most ticks): a plain call, cheaper than redis-py's cluster pipeline
        replies = ([self._deliver(keys=calls[0][0], args=calls[0][1])] if len(calls) == 1
                   else run_all(self.redis, self._deliver, calls))
        nids, items = [None] * len(lines), {}
        for (uid, notes_), eids in zip(by_user.items(), replies, strict=True):
            for (i, ntype, alert_id, mode, _), eid in zip(notes_, eids.split(","), strict=True):
                nids[i] = f"{eid}-{uid}"
                items.setdefault(ntype, []).append(f"{nids[i]}:{alert_id}:{uid}:{mode}")
        args = [batch, now, COMMITTED_KEPT_MS, price, ts, symbol]
        for ntype, typed in items.items():
            args += [ntype, ",".join(typed)]
        return nids, args

    def hand_on(self, symbol, entry_id, commit):
        """Hand a delivered batch to the slow path, then drop it from the outbox: only then,
        so a batch that was not handed on is still there for the sweep."""
        self._commit(keys=[keys.FIRED, keys.FIRED_BATCHES], args=commit)
        self.redis.xdel(keys.outbox(symbol), entry_id)

    def sweep(self, symbols, now_ms=None, age_ms=SWEEP_AGE_MS):
        """Complete the batches older than `age_ms` left in the symbols' outboxes; returns
        how many notifications that wrote (or found written)."""
        symbols = list(symbols)
        if not symbols:
            return 0
        until = (now_ms or clock.now_ms()) - age_ms
        with self.redis.pipeline(transaction=False) as pipe:
            for symbol in symbols:
                pipe.xrange(keys.outbox(symbol), "-", until, count=SWEEP_COUNT)
            found = pipe.execute()
        done = 0
        for symbol, entries in zip(symbols, found, strict=True):
            try:
                done += self._finish(symbol, entries)
            except RedisError:  # one symbol's trouble must not hold back the others'
                log.exception("matcher: batches of %s not finished; the next sweep retries",
                              symbol)
        return done

    def _finish(self, symbol, entries):
        done = 0
        for entry_id, fields in entries:
            log.warning("matcher: completing batch %s of %s left by an earlier run",
                        entry_id, symbol)
            done += len(self.complete(symbol, entry_id, fields["price"], fields["ts"],
                                      fields["notes"]))
        if entries:  # the registry kept the symbol for these batches: maybe no longer
            prune_symbol(self.redis, symbol, self.redis.hlen(keys.alerts(symbol)))
        return done


class HandOff:
    """A listener's `Outbox.hand_on`, in a thread of its own and in order: the next tick
    waits for neither COMMIT nor the XDEL after it (two round trips on two other masters).

    A batch whose hand-on fails, or that finds the queue full, or that a killed process
    still held, stays in the outbox: the sweep finishes it 5 s later, writing no user's side
    twice. Its emails and pushes are late by that much, the browser's notification not."""

    def __init__(self, outbox, size):
        self.outbox = outbox
        self.queue = queue.Queue(maxsize=size)
        self.outage = Outage("outbox-hand-off")
        self.closing = threading.Event()
        self.left = 0  # batches left to the sweep since the queue was last found full
        self.thread = threading.Thread(target=self._run, name="outbox-hand-off", daemon=True)
        self.thread.start()

    def put(self, symbol, entry_id, commit, emptied=False):
        """Queue a delivered batch; `emptied`: it fired the symbol's last alert."""
        try:
            self.queue.put_nowait((symbol, entry_id, commit, emptied))
        except queue.Full:
            if not self.left:
                log.warning("matcher: %d batches wait to be handed on; the next are left "
                            "to the sweep", self.queue.maxsize)
            self.left += 1
            return
        if self.left:
            log.warning("matcher: %d batches were left to the sweep", self.left)
            self.left = 0

    def close(self, timeout=HAND_OFF_CLOSE_S):
        """Hand on what is queued, for up to `timeout`; what is not stays for the sweep."""
        self.closing.set()
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self.thread.join(timeout)

    def _run(self):
        while (item := self.queue.get()) is not None:
            symbol, entry_id, commit, emptied = item
            try:
                self.outbox.hand_on(symbol, entry_id, commit)
                if emptied:  # the matcher kept the symbol registered for this batch
                    prune_symbol(self.outbox.redis, symbol, 0)
                self.outage.recovered()
            except RedisError as exc:  # the batch stays in the outbox, for the sweep
                if not self.closing.is_set():
                    self.closing.wait(self.outage.failed(exc))
            except Exception:  # as must any batch: the thread outlives each failure
                log.exception("matcher: batch %s of %s not handed on; left to the sweep",
                              entry_id, symbol)
