"""Server-sent events: frames, the shared partials they carry, and one stream's generator.

Event names: `notification` (the `_item.html` partial, with the replay entry id as `id:`),
`toast` (`_toast.html`), `unread` (`_badge.html` as an out-of-band swap) and `tick` (the
listener's JSON, no id: prices are state, not history).
"""

import json

from webapp.live.fanout import Message
from webapp.live.feed import Feed, message_item

RETRY_MS = 2000  # EventSource reconnect delay
RETRY_FRAME = f"retry: {RETRY_MS}\n\n".encode()
KEEPALIVE_FRAME = b": keepalive\n\n"
PENDING = {"ended": "", "acked_at": None}  # a notification that insists: Acknowledge shows


def frame(event, data, event_id=None):
    """One SSE event; multi-line data becomes several `data:` lines."""
    head = f"id: {event_id}\nevent: {event}\n" if event_id else f"event: {event}\n"
    body = "".join(f"data: {line}\n" for line in (data.splitlines() or [""]))
    return (head + body + "\n").encode()


class Renderer:
    """Renders the partials once per message; every stream of that user reuses the bytes."""

    def __init__(self, app, inbox_url):
        env = app.jinja_env
        self.item = env.get_template("inbox/_item.html")
        self.toast = env.get_template("inbox/_toast.html")
        self.badge = env.get_template("inbox/_badge.html")
        self.inbox_url = inbox_url
        self._badges = {}

    def message(self, event, m):
        """The frame of one of a message's events (its own, or a notification's toast)."""
        if m.event == "tick":
            return frame("tick", m.raw)  # the listener's JSON as is, no id: prices are state
        if m.event != "notification":
            return frame(event, json.dumps(m.data), m.id)
        if event == "toast":
            return frame("toast", self.toast.render(n=message_item(m), inbox_url=self.inbox_url,
                                                    insists=m.cache.get("insists")))
        item = self.item.render(n=message_item(m), inbox_url=self.inbox_url,
                                insist={message_item(m)["id"]: PENDING}
                                if m.cache.get("insists") else None)
        return frame("notification", item, m.id)

    def unread(self, count):
        cached = self._badges.get(count)
        if cached is None:
            cached = frame("unread", self.badge.render(count=count, oob=True))
            if len(self._badges) < 1000:
                self._badges[count] = cached
        return cached


class SseState:
    """One stream's `Feed`, formatted as SSE bytes.

    Both ways of serving a stream (a generator per request, or the hub writing to a
    handed-off socket) use it.
    """

    __slots__ = ("render", "feed")

    def __init__(self, render, unread, insisting=frozenset()):
        self.render, self.feed = render, Feed(unread, insisting)

    def opening(self, replay):
        """The first bytes: reconnect delay, what was missed, then the unread count."""
        return RETRY_FRAME + self._bytes(self.feed.opening(replay))

    def frames(self, batch):
        """Bytes for live messages, and a comment when the hub's beats say the stream is idle."""
        events = self.feed.live(batch)
        return self._bytes(events) if events else b""

    def _bytes(self, events):
        out, render = [], self.render
        for name, _, payload in events:
            if payload.__class__ is Message:
                # a notification's toast is a second frame of the same message: its own key
                key = "sse" if name == payload.event else "sse-toast"
                data = payload.cache.get(key)
                if data is None:
                    data = payload.cache[key] = render.message(name, payload)
                out.append(data)
            elif payload is None:
                out.append(KEEPALIVE_FRAME)
            else:
                out.append(render.unread(payload))
        return b"".join(out)


class SseStream:
    """The body of one /stream response when the server keeps a greenlet or thread per
    request (the dev server, tests); the server calls close() however it ends."""

    def __init__(self, hub, client, state, replay, on_close=None):
        self.hub, self.client, self.state = hub, client, state
        self._on_close, self._closed = on_close, False
        self._gen = self._events(replay)

    def __iter__(self):
        return self._gen

    def close(self):
        self._gen.close()
        if not self._closed:
            self._closed = True
            self.hub.detach(self.client)
            if self._on_close is not None:
                self._on_close()

    def _events(self, replay):
        yield self.state.opening(replay)
        del replay  # the stream may live for hours: do not keep the backlog
        while True:
            batch = self.client.next_batch()
            if self.client.closed:
                return
            chunk = self.state.frames(batch)
            if chunk:
                yield chunk
