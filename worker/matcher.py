"""Tick matching: one atomic Lua call per tick finds, claims and notifies the alerts it meets.

On a Redis Cluster the call claims and records the batch in the symbol's slot, and a second,
idempotent step writes the users' side in theirs (worker/outbox.py).
"""

import math
from collections import Counter
from pathlib import Path
from time import monotonic, perf_counter

from redis.exceptions import NoScriptError, RedisError

from webapp import keys
from webapp.alerts import scripts
from webapp.alerts.index import WINDOWS_S, fmt_num, idx_key, prune_symbol, rearm_key
from webapp.core import logs, metrics, pubsub
from webapp.exceptions import TicksNotMatched
from webapp.extensions import is_cluster
from worker import packed
from worker.late_prices import LatePrices
from worker.listener.loglines import logline
from worker.outbox import HandOff, Outbox
from worker.packed import PackedCalls

# the match script: its parts, in order, as one chunk (worker/match/tick.lua says why)
PARTS = ("tick.lua", "notify.lua", "kinds.lua", "finish.lua")
SCRIPT = scripts.USES + "".join((Path(__file__).with_name("match") / part).read_text()
                                for part in PARTS)
# Alerts fired per script call: a storm is split so no single call holds Redis for long.
DEFAULT_BATCH = 2000
CONTINUE, RETRY = 1, 2  # ARGV[7] of the match script
# ARGV[8], ARGV[9]: the notified users' keys are known only inside the script
USER_PREFIXES = [keys.REPLAY_PREFIX, keys.USER_CHANNEL_PREFIX]
INLINE, OUTBOX = "inline", "outbox"  # ARGV[10]
# A symbol with level alerts only (the most, and the quiet ticks' cost is mostly the keys
# named) is called with these of its keys; the script answers ALL_KEYS, having done nothing,
# when the symbol has other kinds, and it is then called with every key for ALL_KEYS_S
# before 13 are tried again (its other alerts may have gone).
LEVEL_KEYS = (*range(11), 23, 24)
ALL_KEYS, ALL_KEYS_S = 2, 60.0
# the match script's answer, having done nothing, when another tick's storm is open (a second
# listener's, mid-storm when a lease was handed over): the caller finishes it, then calls again
STORM_OPEN = 3


def _keys(symbol, kind, mode):
    """The match script's KEYS, in its order (listed at the top of match/tick.lua)."""
    up = "above" if kind == "price" else "volume_above"
    windows = [key for window_s in WINDOWS_S for key in (
        keys.index(symbol, f"pctup:{window_s}"), keys.rearm(symbol, f"pctup:{window_s}"),
        keys.index(symbol, f"pctdown:{window_s}"), keys.rearm(symbol, f"pctdown:{window_s}"),
        keys.window(symbol, window_s, "min"), keys.window(symbol, window_s, "max"))]
    return [
        keys.price(symbol), idx_key(symbol, up), rearm_key(symbol, up),
        idx_key(symbol, "below"), rearm_key(symbol, "below"), keys.outbox(symbol),
        keys.alerts_fired(symbol), keys.FIRED if mode == INLINE else keys.outbox(symbol),
        keys.spark(symbol), keys.alerts(symbol), keys.ticks_channel(symbol),
        keys.index(symbol, "xup"), keys.rearm(symbol, "xup"),
        keys.index(symbol, "xdown"), keys.rearm(symbol, "xdown"),
        keys.index(symbol, "xany"), keys.rearm(symbol, "xany_lo"), keys.rearm(symbol, "xany_hi"),
        keys.index(symbol, "chin_lo"), keys.index(symbol, "chin_hi"),
        keys.index(symbol, "chab"), keys.index(symbol, "chbe"), keys.index(symbol, "pend"),
        keys.index(symbol, "cool" if kind == "price" else "coolvol"),
        keys.kinds_in_use(symbol), *windows,
    ]


class Matcher:
    """Matches ticks against the alert index; safe to run twice on the same feed."""

    def __init__(self, redis, batch=DEFAULT_BATCH, mode=None, hand_off_queue=0,
                 late_prices=False):
        """`hand_off_queue` (the listener's): in outbox mode, delivered batches wait in a
        queue of this size to be handed to the slow path by a thread of their own
        (worker/outbox.py `HandOff`), which `close` ends; 0: handed on before returning.
        `late_prices` (the listener's): a thread shows each quiet symbol's last trade
        (worker/late_prices.py) until `close`."""
        self.redis = redis
        self.batch = batch
        self.mode = mode or (OUTBOX if is_cluster(redis) else INLINE)
        self.outbox = Outbox(redis)
        self.late = LatePrices(redis).start() if late_prices else LatePrices(redis)
        self.hand_off = (HandOff(self.outbox, hand_off_queue)
                         if hand_off_queue and self.mode == OUTBOX else None)
        self._script = redis.register_script(SCRIPT)
        self._tail = [*USER_PREFIXES, self.mode, pubsub.command(redis)]
        self._packed = None if self.mode != INLINE else PackedCalls(
            redis, self._script.sha, self._tail)
        # (symbol, kind) -> the args of a tick whose call failed: it is retried before the
        # next tick of its stream, as a retry, so a batch left by a lost reply still fires
        self._failed = {}
        self._key_cache = {}  # (symbol, kind) -> (its level keys, every key)
        self._all_keys = {}  # (symbol, kind) -> until when it is called with every key

    def close(self):
        self.late.close()
        if self.hand_off:
            self.hand_off.close()

    def on_price(self, symbol: str, price: float, ts_ms: int, seq: int = 0) -> list[str]:
        """Record a trade price and fire what it meets; returns the new notification ids.

        `seq` is the trade id: ticks older than (ts_ms, seq) already seen are dropped.
        """
        return self._tick(symbol, "price", price, ts_ms, seq)

    def on_volume(self, symbol: str, volume: float, ts_ms: int, seq: int = 0) -> list[str]:
        """Record a 24 h base volume and fire the volume alerts it meets."""
        return self._tick(symbol, "volume", volume, ts_ms, seq)

    def on_ticks(self, ticks) -> list[str]:
        """Match ticks read together, (kind, symbol, value, ts_ms, seq) each, in order.

        On one Redis they go in one pipelined round trip for each tick a stream has (a
        stream's ticks stay in order); on a cluster, or with a failed tick to retry first,
        one by one. On a Redis error, raises TicksNotMatched with those not matched.
        """
        if self.mode != INLINE or self._failed:
            return self._one_by_one(ticks)
        fired = []
        rounds = _rounds([self._args(s, k, v, t, q) for k, s, v, t, q in ticks])
        for n, calls in enumerate(rounds):
            try:
                fired += self._pipelined(calls)
            except RedisError as exc:
                for _, args in calls:
                    self._failed[(args[0], args[1])] = [*args[:-1], RETRY]
                left = sorted(i for later in rounds[n:] for i, _ in later)
                raise TicksNotMatched([ticks[i] for i in left]) from exc
        return fired

    def _one_by_one(self, ticks):
        fired = []
        for done, (kind, symbol, value, ts_ms, seq) in enumerate(ticks):
            try:
                fired += self._tick(symbol, kind, value, ts_ms, seq)
            except RedisError as exc:
                raise TicksNotMatched(ticks[done:]) from exc
        return fired

    def _pipelined(self, calls):
        """One round trip for calls on different streams; a storm's next batches after."""
        results = self._evalsha_all([(self._keys(a[0], a[1]), a) for _, a in calls])
        _count_round(calls, results)
        again = [i for i, result in enumerate(results) if int(result[0]) == ALL_KEYS]
        if again:  # these did nothing: all in one more round, with every key
            redone = self._evalsha_all(
                [(self._every_key(a[0], a[1]), a) for a in (calls[i][1] for i in again)])
            _count_round([calls[i] for i in again], redone)
            for i, result in zip(again, redone, strict=True):
                results[i] = result
        fired = []
        for (_, args), (more, left, *rest) in zip(calls, results, strict=True):
            if int(more) == STORM_OPEN:  # nothing done: the open storm first, then this tick
                ids = self._run(self._keys(args[0], args[1]), args)
                fired += metrics.tick_matched(args[0], args[1], ids)
                continue
            ids = [str(n) for n in rest]
            if int(left) >= 0:
                prune_symbol(self.redis, args[0], int(left))
            if int(more):
                ids = self._run(self._keys(args[0], args[1]), [*args[:-1], CONTINUE], ids)
                metrics.alerts_fired(metrics.ALERT_TYPES[args[1]], len(ids) - len(rest))
            else:
                _log_fired(args, ids)
            fired += ids
        return fired

    def _evalsha_all(self, calls):
        for attempt in (1, 2):
            started = perf_counter()
            results = self._packed.execute(calls)
            # a round: one call on the wire, less the frames read meanwhile
            metrics.matcher_call(perf_counter() - started - packed.took_meanwhile())
            failed = [r for r in results if isinstance(r, Exception)]
            if failed:  # the calls that ran anyway are seen as done when retried: counted
                _count_round(calls, results)
            if attempt == 1 and any(isinstance(r, NoScriptError) for r in failed):
                self.redis.script_load(self._script.script)  # Redis restarted: load, again
                continue  # the calls that ran anyway are seen as done and dropped
            if failed:
                raise failed[0]
            return results

    def _keys(self, symbol, kind):
        """The keys of the symbol's next call: its level keys unless it has other kinds."""
        level, every = self._both_keys(symbol, kind)
        return every if self._all_keys.get((symbol, kind), 0.0) > monotonic() else level

    def _every_key(self, symbol, kind):
        self._all_keys[(symbol, kind)] = monotonic() + ALL_KEYS_S
        return self._both_keys(symbol, kind)[1]

    def _both_keys(self, symbol, kind):
        both = self._key_cache.get((symbol, kind))
        if both is None:
            every = _keys(symbol, kind, self.mode)
            both = self._key_cache[(symbol, kind)] = ([every[i] for i in LEVEL_KEYS], every)
        return both

    def _tick(self, symbol, kind, value, ts_ms, seq):
        args = self._args(symbol, kind, value, ts_ms, seq)
        if args is None:
            return []
        symbol = args[0]
        fired = []
        failed = self._failed.pop((symbol, kind), None)
        if failed is not None:  # counted apart: the next tick's call may fail in turn
            fired = metrics.tick_matched(symbol, kind, self._run(self._keys(symbol, kind), failed))
            if failed[:-1] == args[:-1]:  # the very tick that failed: done now
                return fired
        return fired + metrics.tick_matched(symbol, kind, self._run(self._keys(symbol, kind), args))

    def _args(self, symbol, kind, value, ts_ms, seq):
        """The match script's ARGV up to its tail; None for a tick that must never fire anything
        (a trade at 0 would meet every `below`)."""
        value = float(value)
        if not math.isfinite(value) or value < 0 or (kind == "price" and value == 0):
            return None
        symbol = symbol.upper()
        if kind == "price":
            self.late.traded(symbol)
        return [symbol, kind, fmt_num(value), int(ts_ms), self.batch, int(seq), 0]

    def _run(self, keys, args, fired=()):
        """Call the match script for a tick until it is done (a storm takes several calls); returns
        the notification ids, those of another tick's storm it finished first included."""
        counted = len(fired)  # the caller's: counted by it
        fired, symbol, finished = list(fired), args[0], []
        try:
            return self._calls(keys, args, symbol, fired, finished)
        except RedisError:  # what fired before is not the retry's to return: counted here
            metrics.alerts_fired(metrics.ALERT_TYPES[args[1]],
                                 len(finished) + len(fired) - counted)
            raise

    def _calls(self, keys, args, symbol, fired, finished):
        """_run's calls; `fired` and `finished` grow as they go."""
        while True:
            try:
                started = perf_counter()
                more, left, *rest = self._script(keys=keys, args=[*args, *self._tail])
                metrics.matcher_call(perf_counter() - started)
            except RedisError:
                self._failed[(symbol, args[1])] = [*args[:-1], RETRY]
                raise
            if int(more) == ALL_KEYS:  # nothing done: the same call, with every key
                keys = self._every_key(symbol, args[1])
                continue
            if int(more) == STORM_OPEN:  # nothing done: finish that storm, then call again
                ts_ms, seq, value = rest
                finished += self._run(keys, [symbol, args[1], value, int(ts_ms), self.batch,
                                             int(seq), CONTINUE])
                continue
            if self.mode == INLINE:
                fired.extend(str(n) for n in rest)
            elif rest:
                fired.extend(self._complete(symbol, args, rest, int(left) == 0))
            if int(left) >= 0:  # only now: the sweep finds a batch left by the registry
                prune_symbol(self.redis, symbol, int(left))
            if not int(more):
                _log_fired(args, fired)
                return finished + fired
            args = [*args[:-1], CONTINUE]  # the same tick goes on, its storm marked open

    def _complete(self, symbol, args, step, emptied):
        """The users' step of a batch; if it fails, Outbox.sweep finishes the batch and the
        tick is retried before the next, so its later batches still fire."""
        try:
            nids, commit = self.outbox.deliver(symbol, step[0], args[2], args[3], step[1])
            if self.hand_off:
                self.hand_off.put(symbol, step[0], commit, emptied)
            else:
                self.outbox.hand_on(symbol, step[0], commit)
            return nids
        except RedisError:
            self._failed[(symbol, args[1])] = [*args[:-1], RETRY]
            # fired and recorded in the outbox: the sweep delivers it, the retry does not
            # return it, so it is counted now
            for ntype, count in Counter(line.split("\t", 2)[1]
                                        for line in step[1].split("\n")).items():
                metrics.alerts_fired(ntype, count)
            raise


def _count_round(calls, results):
    """Count a round's ticks and first batches at once: a later call's error (a storm's next
    batch, a registry write) would lose them, and their retries return nothing."""
    for (_, args), result in zip(calls, results, strict=True):
        if isinstance(result, Exception):  # it failed (or its reply was lost: not counted)
            continue
        more, _, *rest = result
        if int(more) not in (STORM_OPEN, ALL_KEYS):  # those did nothing
            metrics.tick_matched(args[0], args[1], rest)


def _log_fired(args, fired):
    if fired:  # under the id the slow path and the deliveries log it with
        logline("alerts_fired", symbol=args[0], kind=args[1], notifications=len(fired),
                request_id=logs.tick_id(args[0], args[3]))


def _rounds(calls):
    """[(index, args)] lists in which no stream repeats: a stream's k-th tick in round k.
    Ticks that must not fire (args None) are left out."""
    rounds, seen = [], {}
    for i, args in enumerate(calls):
        if args is None:
            continue
        k = seen[(args[0], args[1])] = seen.get((args[0], args[1]), -1) + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append((i, args))
    return rounds
