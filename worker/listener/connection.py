"""The Binance listener: one combined stream for every symbol in `tb:symbols`, ticks to a handler.

The handler (the matcher) gets the ticks of the frames read in one go, `on_ticks([(kind,
symbol, value, ts_ms, seq)])`, so a market-wide burst costs one round trip to Redis, not one
a tick (a handler without `on_ticks` gets `on_price` / `on_volume` for each). One thread does
everything, so control messages, pongs and reads never race, and the message budget is exact.

Never deaf: a connection that worked (it received a frame) and drops is replaced at once;
only attempts failing in a row back off, and every attempt spends from a budget kept under
Binance's 300 per 5 minutes. Never blind: a tick that meets a Redis error is held (low,
high and last per stream) while the socket keeps being read, and applied when Redis is back.
"""

import json
import threading
import time

import redis
import websocket
from websocket import ABNF, WebSocketException

from webapp import keys
from webapp.core import logs, metrics
from webapp.exceptions import TicksNotMatched
from worker import packed
from worker.listener import heldticks, messages
from worker.listener.lag import Lag, status_field
from worker.listener.loglines import logline, now_ms
from worker.listener.pacing import DEFAULT_CONTROL_PER_S, AttemptBudget, Backoff, MessageBudget
from worker.listener.readahead import Frames
from worker.listener.subscriptions import (
    BATCH,
    DEFAULT_MAX_STREAMS,
    Subscriptions,
    streams_for,
    wanted_symbols,
)

__all__ = ["Listener", "logline", "now_ms"]

DEFAULT_MAX_AGE_S = 23 * 3600 + 50 * 60  # Binance cuts connections at 24 h: leave first
# Binance pings every 20 s and sends miniTickers each second; after PROBE_S of quiet the
# listener pings once itself, and a live server answers in a round trip: SILENCE_S of quiet
# even so means a dead link (a path gone without a FIN, a frozen server).
DEFAULT_PROBE_S, DEFAULT_SILENCE_S = 5.0, 15.0
DEFAULT_REDIS_RETRY_S = 0.2  # while Redis is down: how often held ticks try to get through
MAX_BATCH = 200  # ticks read in one go: bounds the wait of the first behind the last
CONNECT_ERRORS = (OSError, WebSocketException)


class Listener:
    """Run with `run(stop)`; returns when `stop` is set or the lease is lost."""

    def __init__(self, redis_client, handler, url, *, breaker=None, lease=None,
                 backoff=None, attempts=None, max_age_s=DEFAULT_MAX_AGE_S,
                 silence_s=DEFAULT_SILENCE_S, probe_s=DEFAULT_PROBE_S, poll_s=0.5,
                 heartbeat_s=1.0,
                 redis_retry_s=DEFAULT_REDIS_RETRY_S, recv_timeout_s=0.2,
                 connect_timeout_s=10.0, max_streams=DEFAULT_MAX_STREAMS,
                 control_per_s=DEFAULT_CONTROL_PER_S, batch=BATCH, symbols=None,
                 status_key=keys.LISTENER):
        self.redis, self.handler, self.url = redis_client, handler, url.rstrip("/")
        # A pool hands each connection its share of the symbols and keeps the status itself.
        self.symbols = symbols or (lambda: wanted_symbols(self.redis))
        self.status_key, self.status = status_key, {}
        self.breaker, self.lease = breaker, lease
        self.backoff = backoff or Backoff()
        self.attempts = attempts or AttemptBudget()
        self.max_age_s, self.silence_s, self.probe_s = max_age_s, silence_s, probe_s
        self.poll_s, self.heartbeat_s = poll_s, heartbeat_s
        self.recv_timeout_s, self.connect_timeout_s = recv_timeout_s, connect_timeout_s
        self.max_streams, self.batch, self.control_per_s = max_streams, batch, control_per_s
        self.budget = self._message_budget()
        self.stop = threading.Event()
        self.ws = self.subs = None
        self.opened_at = self.last_rx = self.replace_at = self.probed_at = 0.0
        self.working = False  # this connection has received a frame
        self.last_tick_ms = 0
        # how late ticks are matched (Binance's clock against ours: a few ms either way)
        self.lag = Lag()
        self._ticks = []  # read, not yet matched
        self._why_ahead = None  # the connection's end, met reading ahead
        self.frames = None  # the connection's frames (readahead.py)
        self.state = "connecting"
        self.held, self.gate = heldticks.HeldTicks(), heldticks.RedisGate(redis_retry_s)
        self.breakers = heldticks.GatedBreaker(breaker, self.gate, heartbeat_s)
        self._wanted = []  # the streams last read: a reconnect asks for them while Redis is down
        self._next_poll = self._next_beat = 0.0
        self._capped_logged = 0

    # -- the outer loop: connect, serve, reconnect -----------------------------------
    def run(self, stop=None):
        self.stop = stop or self.stop
        try:
            while not self.stop.is_set():
                if self._open():
                    self._after(self._serve())
        finally:
            self._close(graceful=True)
            self._match_read()  # ticks read ahead of a round (held if Redis is away)
            self._last_flush()
            metrics.flush_ticks(now=True)
            self._set_state("stopped")

    def _open(self):
        """Connect once, if the breaker and the attempt budget allow; True when open."""
        wait, why = self.breakers.wait(), "breaker_open"
        if not wait:
            wait, why = self.attempts.take(), "attempt_budget"
            if wait:  # shards waiting on one shared budget spread out by their backoff
                wait = max(wait, self.backoff.next())
        if wait:
            logline("connect_deferred", reason=why, in_s=wait)
            self._wait(wait)
            return False
        if self.state != "connecting":
            self._set_state("connecting")
        try:
            self.ws, self.subs = self._connect()
        except CONNECT_ERRORS as exc:
            self._failed(logs.error_text(exc))
            return False
        self._connected()
        return True

    def _connect(self):
        subs = Subscriptions(self.max_streams, self.batch)
        initial = subs.url_streams(self._poll_streams())
        query = "?streams=" + "/".join(initial) if initial else ""
        ws = websocket.create_connection(f"{self.url}/stream{query}",
                                         timeout=self.connect_timeout_s,
                                         skip_utf8_validation=True)
        ws.settimeout(self.recv_timeout_s)
        self.frames = Frames(ws)  # read from memory, not a system call a part
        self._why_ahead = None  # the last connection's end is not this one's
        return ws, subs

    def _message_budget(self):
        # Binance counts per connection. 1.2 s, not 1 s: frames bunched in transit must
        # still fit its 1 s window.
        return MessageBudget(self.control_per_s, window=1.2)

    def _connected(self):
        self.opened_at = self.last_rx = time.monotonic()
        self.replace_at = self.opened_at + self.max_age_s
        self.budget = self._message_budget()  # a new connection starts with a full budget
        self.working = False
        self._next_poll = 0.0
        logline("connected", streams=len(self.subs.current))
        # "" clears the last failure's text: beside "connected" it would read as current
        self._set_state("connected", connected_at=now_ms(), streams=len(self.subs.current),
                        last_error="")

    def _worked(self):
        """The first frame: the server serves us, so the failures in a row are over."""
        self.working = True
        self.backoff.reset()
        self.breakers.success()

    def _failed(self, error):
        """An attempt failed, or its connection ended before a frame: back off."""
        metrics.reconnect("failed")
        delay = self.breakers.failure(error, self.backoff.next())
        logline("reconnecting", in_s=delay, attempt=self.backoff.attempt, error=error)
        self._set_state("backoff", last_error=error)
        self._wait(delay)

    def _after(self, why):
        """Close the connection that ended; reconnect at once if it worked."""
        lived = time.monotonic() - self.opened_at
        self._close(graceful=why == "stopped")
        if why == "stopped":
            return
        logline("disconnected", reason=why, lived_s=lived, worked=self.working)
        if not self.working:  # accepted, then dropped before a frame: a failure like any
            self._failed(why)
            return
        logline("reconnecting", in_s=0.0, attempt=0)  # a drop is no failure: no backoff
        metrics.reconnect("dropped")
        self._set_state("connecting", last_error=why)

    def _close(self, graceful):
        ws, self.ws = self.ws, None
        if ws is None:
            return
        try:
            if graceful:
                ws.close(timeout=1)
            else:
                ws.shutdown()
        except CONNECT_ERRORS:
            pass

    def _wait(self, seconds):
        """Sleep `seconds` unless stopped, tending Redis (beats, held ticks) meanwhile."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            self._tend_redis()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.stop.wait(min(left, self.heartbeat_s, self.gate.retry_s))

    # -- one connection --------------------------------------------------------------
    def _serve(self):
        """Read until the connection ends; returns why it ended."""
        while not self.stop.is_set():
            try:
                why = self._housekeep() or self._receive()  # a new connection asks first
            except CONNECT_ERRORS as exc:
                why = f"{type(exc).__name__}: {exc}"
            if why in ("server_shutdown", "max_age") and self._replace(why):
                continue
            if why:
                return why
        return "stopped"

    def _receive(self):
        """Read a frame, and the frames already waiting behind it (up to MAX_BATCH ticks):
        their ticks are matched together, in one round trip to Redis. While Redis matches
        them, the frames that came meanwhile are read for the next round."""
        why, self._why_ahead = self._why_ahead, None
        going = False
        try:
            if why is None and not self._ticks:  # none read ahead: wait for one
                why = self._read_frame()
            while why is None and 0 < len(self._ticks) < MAX_BATCH and self.frames.readable():
                why = self._read_frame()
            going = why is None
        finally:
            with packed.meanwhile(self._read_ahead if going else None):
                self._match_read()
        return why

    def _read_ahead(self):
        """The frames already here, up to a round's ticks. An end met is kept for the next
        `_receive`, which matches what was read before it first."""
        try:
            while (self._why_ahead is None and len(self._ticks) < MAX_BATCH
                   and self.frames.readable()):
                self._why_ahead = self._read_frame()
        except CONNECT_ERRORS as exc:
            self._why_ahead = f"{type(exc).__name__}: {exc}"

    def _read_frame(self):
        got = self.frames.next()
        if got is None:  # the read timed out
            return None
        opcode, data = got
        self.last_rx = time.monotonic()
        if opcode == ABNF.OPCODE_CLOSE:
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            return f"closed by server: {code} {data[2:].decode(errors='replace')}"
        if not self.working:
            self._worked()
        if opcode == ABNF.OPCODE_TEXT:
            return self._on_text(data)
        if opcode == ABNF.OPCODE_PING:
            self.budget.spend()  # websocket-client has already sent the pong
        elif opcode == ABNF.OPCODE_BINARY:  # Binance sends text only
            logline("bad_message", error="binary frame", bytes=len(data))
        return None

    def _on_text(self, raw):
        try:
            what, body = messages.parse(raw)
        except messages.BAD_MESSAGE as exc:
            logline("bad_message", error=repr(exc)[:200], text=raw[:200])
            return None
        if what == "tick":
            if body[0] == "price":
                self.last_tick_ms = body[3]
            metrics.tick_received(body[1])
            self._ticks.append(body)
        elif what == "shutdown":
            logline("server_shutdown")
            return "server_shutdown"
        elif what == "reply" and self.subs is not None:
            error = self.subs.on_reply(body)
            if error:
                logline("control_refused", error=error)
        else:
            messages.log_other(what, body, raw)
        return None

    def _match_read(self):
        """Match the ticks read; while Redis is down, hold them (behind those held, in order)."""
        ticks, self._ticks = self._ticks, []
        if ticks and not self.gate.down:
            try:
                heldticks.match_ticks(self.handler, ticks)
                self.lag.note(max(0, now_ms() - min(tick[3] for tick in ticks)))
                ticks = []
            except TicksNotMatched as exc:
                self.gate.failed(exc.__cause__ or exc)
                ticks = exc.unmatched
        for tick in ticks:
            self.held.add(*tick)

    def _apply(self, kind, symbol, value, ts_ms, seq):
        heldticks.apply_tick(self.handler, kind, symbol, value, ts_ms, seq)

    def _housekeep(self):
        now = time.monotonic()
        metrics.flush_ticks()  # the counts of the last ticks before a quiet spell
        if now >= self._next_poll and not self.gate.down:
            self._next_poll = now + self.poll_s
            self._want(self._poll_streams())
        self._tend_redis()
        self._send_control()
        if now >= self.replace_at:
            return "max_age"
        quiet = now - self.last_rx
        if quiet >= self.silence_s and not self.frames.arriving():
            return f"silent for {quiet:.0f} s"
        if quiet >= self.probe_s and self.probed_at < self.last_rx and self.budget.available():
            self.ws.ping()  # its pong, or anything else, is a frame heard
            self.budget.spend()
            self.probed_at = now
        return None

    def _poll_streams(self):
        """The streams the symbols want; while Redis is down, the ones last read."""
        wanted = self.gate.call(lambda: streams_for(self.symbols()))
        if wanted is not None:
            self._wanted = wanted
        return self._wanted

    def _want(self, wanted):
        self.subs.want(wanted)
        if self.subs.capped != self._capped_logged:
            self._capped_logged = self.subs.capped
            if self.subs.capped:
                logline("stream_cap", wanted=len(wanted), max=self.max_streams,
                        left_out=self.subs.capped)

    def _send_control(self):
        while self.budget.available() > 0:
            msg = self.subs.next_message()
            if msg is None:
                break
            self.ws.send(json.dumps(msg))
            self.budget.spend()
            logline("subscribed" if msg["method"] == "SUBSCRIBE" else "unsubscribed",
                    count=len(msg["params"]), streams=len(self.subs.current), id=msg["id"])
        # with more to send, read only until the budget allows the next message
        timeout = self.recv_timeout_s
        if self.subs.to_add or self.subs.to_remove:
            timeout = min(timeout, max(0.001, self.budget.ready_in()))
        self.ws.settimeout(timeout)

    def _replace(self, why):
        """Open the next connection before closing this one, so no tick is missed.

        True to go on serving: on the new connection, or on the old one until an attempt
        is to spare (a server that shuts down drops it meanwhile).
        """
        wait = self.attempts.take()
        if wait:
            self.replace_at = time.monotonic() + wait
            return True
        old, old_subs = self.ws, self.subs
        try:
            self.ws, self.subs = self._connect()
        except CONNECT_ERRORS as exc:
            logline("replace_failed", reason=why, error=str(exc))
            self.ws, self.subs = old, old_subs
            return False
        try:
            old.close(timeout=0.25)  # brief: ticks wait on the new connection meanwhile
        except CONNECT_ERRORS:
            pass
        logline("replaced", reason=why)
        metrics.reconnect("replaced")
        self._connected()
        return True

    # -- Redis: status, lease, and riding out an outage ------------------------------
    def _tend_redis(self):
        """Beat when due; while Redis is down, try every `redis_retry_s` to get back."""
        if not self.gate.down:
            if time.monotonic() >= self._next_beat:
                self.gate.call(self._beat)
            return
        if not self.gate.retry_due():
            return
        held, first = self.held.count, self.held.first_ms
        try:
            applied = self.held.flush(self._apply)
            if not applied:
                self.redis.ping()
            if first is not None:  # matched late by the outage
                self.lag.note(max(0, now_ms() - first))
            self._beat()
        except redis.RedisError:
            return  # still down: said once already
        self.gate.back(ticks_held=held, applied=applied)
        if self.working:
            self.breakers.success()  # its success came while Redis was away

    def _last_flush(self):
        if self.held:
            try:
                self.held.flush(self._apply)
            except redis.RedisError as exc:
                logline("held_dropped", ticks=len(self.held), error=str(exc)[:200])

    def _beat(self):
        self._next_beat = time.monotonic() + self.heartbeat_s
        if self.lease is not None and not self.lease.renew():
            logline("lease_lost", holder=self.lease.holder() or "")
            self.stop.set()
        if self.status_key:
            self.redis.hset(self.status_key, mapping={
                "state": self.state, "heartbeat": now_ms(), "last_tick_ms": self.last_tick_ms,
                "streams": self.streams, **status_field([self.lag.worst_ms()])})

    @property
    def streams(self):
        subs = self.subs
        return len(subs.current) if subs is not None and self.ws else 0

    def _set_state(self, state, **fields):
        self.state = state
        self.status.update(fields)
        if self.status_key:
            self.gate.call(lambda: self.redis.hset(
                self.status_key, mapping={"state": state, "heartbeat": now_ms(), **fields}))

