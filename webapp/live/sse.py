"""Server-sent events: frames, the shared partials they carry, and one stream's generator.

Event names: `notification` (the `_item.html` partial, with the replay entry id as `id:`),
`toast` (`_toast.html`), `unread` (`_badge.html` as an out-of-band swap), `changed` (JSON:
what a read, delete or acknowledgement elsewhere did, applied by static/js/live.js) and `tick`
(the listener's JSON, no id: prices are state, not history).
"""

import json
import re
import secrets

from webapp.core import jsontext
from webapp.live.fanout import Message
from webapp.live.feed import Feed, message_item

RETRY_MS = 2000  # EventSource reconnect delay
RETRY_FRAME = f"retry: {RETRY_MS}\n\n".encode()
KEEPALIVE_FRAME = b": keepalive\n\n"
PENDING = {"ended": "", "acked_at": None}  # a notification that insists: Acknowledge shows
# Stands for the id in a rendering shared by notifications alike but for it (one event to
# every user: one per user, each with its own id). Random per process, so no text sent to
# us can hold it; lower-case hex, so a template's `lower` cannot make it from other text
# either (a shape whose text holds it, in any case, is not shared).
ID_TOKEN = secrets.token_hex(16)
_ID_TOKEN_BYTES = ID_TOKEN.encode()
PLAIN_ID = re.compile(r"\d+-\d+-\d+", re.ASCII)  # entry id - user id: the same escaped or not
UNSHAPED = frozenset(("id", "user_id"))  # what a shared rendering leaves out
SHARED_MAX = 512  # shared renderings kept; a storm of all-different notifications just misses


def frame(event, data, event_id=None):
    """One SSE event; multi-line data becomes several `data:` lines."""
    head = f"id: {event_id}\nevent: {event}\n" if event_id else f"event: {event}\n"
    body = "".join(f"data: {line}\n" for line in (data.splitlines() or [""]))
    return (head + body + "\n").encode()


class Renderer:
    """Renders the partials once per message (every stream of that user reuses the bytes),
    and a notification's partials once per shape: one rendering, with ID_TOKEN for the id,
    serves every notification alike but for its id (the one message each user gets when an
    event reaches every user), each frame taking its own id in."""

    def __init__(self, app, inbox_url):
        env = app.jinja_env
        self.item = env.get_template("inbox/_item.html")
        self.toast = env.get_template("inbox/_toast.html")
        self.badge = env.get_template("inbox/_badge.html")
        self.inbox_url = inbox_url
        self._badges, self._shared = {}, {}

    def message(self, event, m):
        """The frame of one of a message's events (its own, or a notification's toast)."""
        if m.event == "tick":
            return frame("tick", m.raw)  # the listener's JSON as is, no id: prices are state
        if m.event != "notification":
            return frame(event, json.dumps(m.data), m.id)
        insists = bool(m.cache.get("insists"))
        event_id = m.id if event == "notification" else None  # a toast is not replayed
        esc = m.cache.get("esc")
        if esc is not None:  # replayed, its reminders ended: as it stands, and not shared
            return self._notification(event, message_item(m), False, event_id, esc)
        shape = _shape(m)
        if shape is None:
            return self._notification(event, message_item(m), insists, event_id)
        key = (event, insists, shape)
        shared = self._shared.get(key)
        if shared is None:
            if len(self._shared) >= SHARED_MAX:
                self._shared.clear()
            shared = self._shared[key] = self._notification(
                event, {**message_item(m), "id": ID_TOKEN}, insists, None)
        shared = shared.replace(_ID_TOKEN_BYTES, m.cache["nid"])
        return f"id: {event_id}\n".encode() + shared if event_id else shared

    def _notification(self, event, item, insists, event_id, esc=None):
        if event == "toast":
            acked = esc if esc is not None and esc.acked_at else None
            return frame("toast", self.toast.render(n=item, inbox_url=self.inbox_url,
                                                    insists=insists, acked=acked))
        insist = {item["id"]: esc} if esc is not None else (
            {item["id"]: PENDING} if insists else None)
        html = self.item.render(n=item, inbox_url=self.inbox_url, insist=insist)
        return frame("notification", html, event_id)

    def unread(self, count):
        cached = self._badges.get(count)
        if cached is None:
            cached = frame("unread", self.badge.render(count=count, oob=True))
            if len(self._badges) < 1000:
                self._badges[count] = cached
        return cached


def _shape(m):
    """The notification's fields but its id and user id, as JSON (made once a message, for
    its item and its toast); None when its rendering cannot be shared: an id that is not
    plain digits, or text holding the token.

    Read from the published fields, not the API item: a rendering shared by 10k users then
    costs each of them no item at all. The item is made of these fields alone, never of the
    user id (inbox.to_api), so equal text means an equal item but for its id.
    """
    shape = m.cache.get("shape", False)
    if shape is False:
        shape, data = None, m.data
        nid = str(data.get("id")) if isinstance(data, dict) else ""
        if PLAIN_ID.fullmatch(nid):
            text = jsontext.dumps({k: v for k, v in data.items() if k not in UNSHAPED})
            if _ID_TOKEN_BYTES not in text.lower():
                shape = text
                m.cache["nid"] = nid.encode()
        m.cache["shape"] = shape
    return shape


class SseState:
    """One stream's `Feed`, formatted as SSE bytes.

    Both ways of serving a stream (a generator per request, or the hub writing to a
    handed-off socket) use it.
    """

    __slots__ = ("render", "feed", "ended")

    def __init__(self, render, unread, insisting=frozenset(), ended=None):
        self.render, self.feed = render, Feed(unread, insisting)
        self.ended = ended  # {nid: escalation}: replayed ones whose reminders ended

    def opening(self, replay):
        """The first bytes: reconnect delay, what was missed, then the unread count."""
        ended, self.ended = self.ended, None  # read once: the stream may live for hours
        return RETRY_FRAME + self._bytes(self.feed.opening(replay, ended))

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
