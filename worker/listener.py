"""The Binance listener: one combined stream for every symbol in `tb:symbols`, ticks to a handler.

The handler (the matcher) gets `on_price(symbol, price, ts_ms)` for each trade and
`on_volume(symbol, volume, ts_ms)` for each miniTicker. One thread does everything, so
control messages, pongs and reads never race, and the message budget is exact.
"""

import json
import threading
import time

import redis
import websocket
from websocket import ABNF, WebSocketException, WebSocketTimeoutException

from worker.loglines import logline, now_ms
from worker.pacing import DEFAULT_CONTROL_PER_S, Backoff, MessageBudget
from worker.subscriptions import (
    BATCH,
    DEFAULT_MAX_STREAMS,
    Subscriptions,
    streams_for,
    wanted_symbols,
)

__all__ = ["STATUS_KEY", "Listener", "logline", "now_ms"]

STATUS_KEY = "tb:listener"
DEFAULT_MAX_AGE_S = 23 * 3600 + 50 * 60  # Binance cuts connections at 24 h: leave first
DEFAULT_STABLE_S = 60.0  # a connection that lived this long resets the backoff
DEFAULT_SILENCE_S = 65.0  # Binance pings every 20 s: this much quiet means a dead link
PRICE_EVENTS = ("aggTrade", "trade")
CONNECT_ERRORS = (OSError, WebSocketException)


class Listener:
    """Run with `run(stop)`; returns when `stop` is set or the lease is lost."""

    def __init__(self, redis_client, handler, url, *, breaker=None, lease=None,
                 backoff=None, max_age_s=DEFAULT_MAX_AGE_S, stable_s=DEFAULT_STABLE_S,
                 silence_s=DEFAULT_SILENCE_S, poll_s=0.5, heartbeat_s=1.0,
                 recv_timeout_s=0.2, connect_timeout_s=10.0,
                 max_streams=DEFAULT_MAX_STREAMS, control_per_s=DEFAULT_CONTROL_PER_S,
                 batch=BATCH, symbols=None, status_key=STATUS_KEY):
        self.redis, self.handler, self.url = redis_client, handler, url.rstrip("/")
        # A pool hands each connection its share of the symbols and keeps the status itself.
        self.symbols = symbols or (lambda: wanted_symbols(self.redis))
        self.status_key, self.status = status_key, {}
        self.breaker, self.lease = breaker, lease
        self.backoff = backoff or Backoff()
        self.max_age_s, self.stable_s, self.silence_s = max_age_s, stable_s, silence_s
        self.poll_s, self.heartbeat_s = poll_s, heartbeat_s
        self.recv_timeout_s, self.connect_timeout_s = recv_timeout_s, connect_timeout_s
        self.max_streams, self.batch = max_streams, batch
        # 1.2 s, not 1 s: frames bunched in transit must still fit Binance's 1 s window.
        self.budget = MessageBudget(control_per_s, window=1.2)
        self.stop = threading.Event()
        self.ws = self.subs = None
        self.opened_at = self.last_rx = 0.0
        self.last_tick_ms = 0
        self.state = "connecting"
        self._next_poll = self._next_beat = 0.0
        self._capped_logged = 0

    # -- the outer loop: connect, serve, back off ------------------------------------
    def run(self, stop=None):
        self.stop = stop or self.stop
        try:
            while not self.stop.is_set():
                try:
                    if self._open():
                        self._after(self._serve())
                except redis.RedisError as exc:
                    # Without Redis there is nothing to match against: wait for it, keep going.
                    logline("redis_error", error=str(exc))
                    self._close(graceful=False)
                    self.stop.wait(self.heartbeat_s)
        finally:
            self._close(graceful=True)
            self._set_state("stopped")

    def _open(self):
        """Connect once, or count the failure and wait out the backoff; True when open."""
        if self.breaker is not None and not self.breaker.allow():
            self._wait(self.breaker.retry_in() or self.heartbeat_s)
            return False
        self._set_state("connecting")
        try:
            self.ws, self.subs = self._connect()
        except CONNECT_ERRORS as exc:
            self._connect_failed(exc)
            return False
        self._connected()
        return True

    def _connect(self):
        subs = Subscriptions(self.max_streams, self.batch)
        wanted = streams_for(self.symbols())
        initial = subs.url_streams(wanted)
        query = "?streams=" + "/".join(initial) if initial else ""
        ws = websocket.create_connection(f"{self.url}/stream{query}",
                                         timeout=self.connect_timeout_s,
                                         skip_utf8_validation=True)
        ws.settimeout(self.recv_timeout_s)
        return ws, subs

    def _connected(self):
        self.opened_at = self.last_rx = time.monotonic()
        self._next_poll = 0.0
        if self.breaker is not None:
            was = self.breaker.state()["state"]
            self.breaker.success()
            if was != "closed":
                logline("breaker_closed", breaker=self.breaker.name)
        logline("connected", streams=len(self.subs.current))
        self._set_state("connected", connected_at=now_ms(), streams=len(self.subs.current))

    def _connect_failed(self, exc):
        error = f"{type(exc).__name__}: {exc}"[:300]
        opened = self.breaker.failure(error) if self.breaker is not None else False
        delay = self.backoff.next()
        if opened:
            delay = max(delay, self.breaker.retry_in())
            logline("breaker_opened", breaker=self.breaker.name, retry_in_s=delay)
        logline("reconnecting", in_s=delay, attempt=self.backoff.attempt, error=error)
        self._set_state("backoff", last_error=error)
        self._wait(delay)

    def _after(self, why):
        """Close the connection that ended and wait as long as the reason deserves."""
        lived = time.monotonic() - self.opened_at
        self._close(graceful=why == "stopped")
        if why == "stopped":
            return
        if lived >= self.stable_s:
            self.backoff.reset()
        delay = self.backoff.next()
        logline("disconnected", reason=why, lived_s=lived)
        logline("reconnecting", in_s=delay, attempt=self.backoff.attempt)
        self._set_state("backoff", last_error=why)
        self._wait(delay)

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
        """Sleep `seconds` unless stopped, beating the heartbeat meanwhile."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            self._safe_beat()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.stop.wait(min(left, self.heartbeat_s))

    # -- one connection --------------------------------------------------------------
    def _serve(self):
        """Read until the connection ends; returns why it ended."""
        while not self.stop.is_set():
            try:
                why = self._receive() or self._housekeep()
            except CONNECT_ERRORS as exc:
                why = f"{type(exc).__name__}: {exc}"
            except redis.RedisError as exc:
                logline("redis_error", error=str(exc))
                self.stop.wait(self.heartbeat_s)  # the tick is lost either way; do not spin
                continue
            if why in ("server_shutdown", "max_age"):
                if self._replace(why):
                    continue
            if why:
                return why
        return "stopped"

    def _receive(self):
        try:
            opcode, frame = self.ws.recv_data_frame(True)
        except WebSocketTimeoutException:
            return None
        self.last_rx = time.monotonic()
        if opcode == ABNF.OPCODE_TEXT:
            return self._on_text(frame.data)
        if opcode == ABNF.OPCODE_PING:
            self.budget.spend()  # websocket-client has already sent the pong
        elif opcode == ABNF.OPCODE_CLOSE:
            code = int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else None
            return f"closed by server: {code} {frame.data[2:].decode(errors='replace')}"
        return None

    def _on_text(self, raw):
        try:
            msg = json.loads(raw)
            data = msg.get("data", msg)
            event = data.get("e") if isinstance(data, dict) else None
            if event in PRICE_EVENTS:
                self.last_tick_ms = int(data["T"])
                seq = int(data.get("a") or data.get("t") or 0)
                self.handler.on_price(data["s"], float(data["p"]), self.last_tick_ms, seq)
            elif event == "24hrMiniTicker":
                self.handler.on_volume(data["s"], float(data["v"]), int(data["E"]))
            elif event == "serverShutdown":
                logline("server_shutdown")
                return "server_shutdown"
            elif "id" in msg and self.subs is not None:
                error = self.subs.on_reply(msg)
                if error:
                    logline("control_refused", error=error)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            logline("bad_message", error=repr(exc), message=raw[:200])
        return None

    def _housekeep(self):
        now = time.monotonic()
        if now >= self._next_poll:
            self._next_poll = now + self.poll_s
            self._want(streams_for(self.symbols()))
        self._send_control()
        if now >= self._next_beat:
            self._beat()
        if now - self.opened_at >= self.max_age_s:
            return "max_age"
        if now - self.last_rx >= self.silence_s:
            return f"silent for {now - self.last_rx:.0f} s"
        return None

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
                return
            self.ws.send(json.dumps(msg))
            self.budget.spend()
            logline("subscribed" if msg["method"] == "SUBSCRIBE" else "unsubscribed",
                    count=len(msg["params"]), streams=len(self.subs.current), id=msg["id"])

    def _replace(self, why):
        """Open the next connection before closing this one, so no tick is missed."""
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
        self._connected()
        return True

    # -- status and lease ------------------------------------------------------------
    def _safe_beat(self):
        try:
            self._beat()
        except redis.RedisError as exc:
            logline("redis_error", error=str(exc))

    def _beat(self):
        self._next_beat = time.monotonic() + self.heartbeat_s
        if self.lease is not None and not self.lease.renew():
            logline("lease_lost", holder=self.lease.holder() or "")
            self.stop.set()
        if self.status_key:
            self.redis.hset(self.status_key, mapping={
                "state": self.state, "heartbeat": now_ms(), "last_tick_ms": self.last_tick_ms,
                "streams": self.streams})

    @property
    def streams(self):
        subs = self.subs
        return len(subs.current) if subs is not None and self.ws else 0

    def _set_state(self, state, **fields):
        self.state = state
        self.status.update(fields)
        try:
            if self.status_key:
                self.redis.hset(self.status_key,
                                mapping={"state": state, "heartbeat": now_ms(), **fields})
        except redis.RedisError as exc:
            logline("redis_error", error=str(exc))
