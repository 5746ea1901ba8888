"""Which streams one Binance connection carries, and the control messages that get it there."""

import itertools
import re
import time

from webapp.alerts import index as alert_index
from worker.listener.shards import shard_of

DEFAULT_MAX_STREAMS = 1024
BATCH = 200  # streams per SUBSCRIBE / UNSUBSCRIBE message
# Servers cap the request line (8 KiB is common): the URL carries the first streams and
# SUBSCRIBE the rest.
URL_MAX_CHARS = 3000
# A refused stream is asked for again after 5 s, then 10, 20, 40 and every 60 s: a passing
# refusal costs its alerts seconds, one that stands a message a minute.
REJECT_RETRY_S, REJECT_RETRY_MAX_S = 5.0, 60.0
SYMBOL = re.compile(r"^[A-Z0-9]{2,20}$")


def wanted_symbols(redis, shard=0, shards=1):
    """Upper-case symbols with at least one indexed alert that the shard follows."""
    return {symbol for symbol in alert_index.symbols(redis)
            if SYMBOL.match(symbol) and shard_of(symbol, shards) == shard}


def streams_for(symbols):
    """Price and volume streams, in a stable order, for `symbols`."""
    streams = []
    for symbol in sorted(symbols):
        low = symbol.lower()
        streams += [f"{low}@aggTrade", f"{low}@miniTicker"]
    return streams


class Subscriptions:
    """The streams of one connection: what it has, what to add and drop, replies awaited."""

    def __init__(self, max_streams=DEFAULT_MAX_STREAMS, batch=BATCH, clock=time.monotonic):
        self.max_streams, self.batch, self.clock = max_streams, batch, clock
        self.current = set()  # subscribed or asked for
        self.to_add = []
        self.to_remove = set()
        self.pending = {}  # request id -> (method, streams)
        self.rejected = {}  # stream -> monotonic time to try again
        self.refusals = {}  # stream -> refusals in a row
        self.capped = 0  # wanted streams beyond max_streams
        self._ids = itertools.count(1)

    def url_streams(self, wanted):
        """The leading streams that fit in the connection URL; they count as subscribed."""
        chosen, length = [], 0
        for stream in self._allowed(wanted)[: self.max_streams]:
            length += len(stream) + 1
            if length > URL_MAX_CHARS:
                break
            chosen.append(stream)
        self.current = set(chosen)
        return chosen

    def want(self, wanted):
        """Aim at `wanted` (ordered); returns True when something must be sent."""
        allowed = self._allowed(wanted)
        self.capped = max(0, len(allowed) - self.max_streams)
        keep = allowed[: self.max_streams]
        self.to_remove = self.current - set(keep)
        self.to_add = [s for s in keep if s not in self.current]
        return bool(self.to_add or self.to_remove)

    def next_message(self):
        """The next control message, unsubscribes first so the cap holds; None when done."""
        if self.to_remove:
            streams = sorted(self.to_remove)[: self.batch]
            self.to_remove.difference_update(streams)
            self.current.difference_update(streams)
            return self._request("UNSUBSCRIBE", streams)
        if self.to_add:
            streams, self.to_add = self.to_add[: self.batch], self.to_add[self.batch:]
            self.current.update(streams)
            return self._request("SUBSCRIBE", streams)
        return None

    def on_reply(self, msg):
        """Settle a reply; returns an error text when the server refused the request."""
        method, streams = self.pending.pop(msg.get("id"), (None, []))
        if "code" not in msg:
            if method == "SUBSCRIBE":
                for stream in streams:
                    self.refusals.pop(stream, None)
            return None
        if method == "SUBSCRIBE":
            self.current.difference_update(streams)
            now = self.clock()
            for stream in streams:
                refused = self.refusals[stream] = self.refusals.get(stream, 0) + 1
                self.rejected[stream] = now + min(REJECT_RETRY_MAX_S,
                                                  REJECT_RETRY_S * 2 ** min(refused - 1, 8))
        return f"{method or 'request'} refused: {msg.get('code')} {msg.get('msg')}"

    def _request(self, method, streams):
        request_id = next(self._ids)
        self.pending[request_id] = (method, streams)
        return {"method": method, "params": streams, "id": request_id}

    def _allowed(self, wanted):
        now = self.clock()
        self.rejected = {s: t for s, t in self.rejected.items() if t > now}
        return [s for s in wanted if s not in self.rejected]
