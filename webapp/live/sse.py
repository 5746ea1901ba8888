"""Server-sent events: frames, the shared partials they carry, and one stream's generator.

Event names: `notification` (the `_item.html` partial, with the replay entry id as `id:`),
`toast` (`_toast.html`), `unread` (`_badge.html` as an out-of-band swap) and `tick` (the
listener's JSON, no id: prices are state, not history).
"""

import json

from webapp.inbox import service as inbox
from webapp.live.fanout import BEATS_PER_KEEPALIVE, KEEPALIVE

RETRY_MS = 2000  # EventSource reconnect delay
TOASTS_ON_REPLAY = 3  # a long gap replays into the list, but pops up only the latest few
KEEPALIVE_FRAME = b": keepalive\n\n"


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

    def notification(self, n, event_id, toast=True):
        item = self.item.render(n=n, inbox_url=self.inbox_url)
        out = frame("notification", item, event_id)
        if toast:
            out += frame("toast", self.toast.render(n=n))
        return out

    def unread(self, count):
        cached = self._badges.get(count)
        if cached is None:
            cached = frame("unread", self.badge.render(count=count, oob=True))
            if len(self._badges) < 1000:
                self._badges[count] = cached
        return cached


def api_item(data):
    """The published notification (dict or JSON text) as the API's item."""
    n = json.loads(data) if isinstance(data, str) else dict(data)
    if isinstance(n.get("data"), str):
        n["data"] = json.loads(n["data"] or "{}")
    n.setdefault("created_at", 0)
    return inbox.to_api(n)


class SseState:
    """What one stream has sent: the unread count, the last replayed id, beats since a write.

    Turns messages into bytes; both transports (a generator per request, or the hub writing
    to a handed-off socket) use it.
    """

    __slots__ = ("render", "count", "last", "quiet")

    def __init__(self, render, unread):
        self.render, self.count, self.last, self.quiet = render, unread, None, 0

    def opening(self, replay):
        """The first bytes: reconnect delay, what was missed, then the unread count."""
        out, toasts_from = [f"retry: {RETRY_MS}\n\n".encode()], len(replay) - TOASTS_ON_REPLAY
        for i, (eid, event, n) in enumerate(replay):
            if event == "notification":  # one already read pops up no toast
                toast = i >= toasts_from and n["status"] == "unread"
                out.append(self.render.notification(api_item(n), eid, toast=toast))
            else:
                out.append(frame(event, json.dumps(n), eid))
        if replay:
            self.last = inbox.stream_id(replay[-1][0])
        out.append(self.render.unread(self.count))
        return b"".join(out)

    def frames(self, batch):
        """Bytes for live messages, and a comment when the hub's beats say the stream is idle."""
        out = []
        for m in batch:
            if m is KEEPALIVE:
                self.quiet += 1
                data = KEEPALIVE_FRAME if self.quiet >= BEATS_PER_KEEPALIVE else b""
            else:
                data = self._live(m)
            if data:
                out.append(data)
                self.quiet = 0
        return b"".join(out)

    def _live(self, m):
        if m.event == "tick":
            return frame("tick", m.raw)
        if m.event == "unread":
            self.count = int(m.data or 0)
            return self.render.unread(self.count)
        if m.event != "notification":
            return frame(m.event, json.dumps(m.data), m.id)
        if self.last is not None and m.id and inbox.stream_id(m.id) <= self.last:
            return b""  # already sent in the replay
        cached = m.cache.get("sse")
        if cached is None:
            cached = m.cache["sse"] = self.render.notification(api_item(m.data), m.id)
        if (m.data or {}).get("status", "unread") == "unread":
            self.count += 1
        return cached + self.render.unread(self.count)


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
