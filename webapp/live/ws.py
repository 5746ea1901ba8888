"""/ws: the events /stream sends, as JSON text `{"id", "event", "data"}`.

`notification` (the API's item, id = replay entry id), `unread` (the count, after every
change: a new notification, read, read all, delete), `tick` and `keepalive`. The HTML-only
`toast` is left out: a WebSocket client shows a notification however it likes.
"""

import json

from webapp.inbox import service as inbox
from webapp.live.fanout import BEATS_PER_KEEPALIVE, KEEPALIVE
from webapp.live.sse import api_item

KEEPALIVE_TEXT = '{"event":"keepalive"}'


def unread_text(count):
    return f'{{"event":"unread","data":{int(count)}}}'


def notification_text(message):
    """A live notification's JSON text, made once per message for every stream."""
    text = message.cache.get("ws")
    if text is None:
        text = message.cache["ws"] = json.dumps(
            {"id": message.id, "event": "notification", "data": api_item(message.data)})
    return text


class WsState:
    """What one WebSocket has sent: the unread count, the last replayed id, beats since a write."""

    __slots__ = ("count", "last", "quiet")

    def __init__(self, unread):
        self.count, self.last, self.quiet = unread, None, 0

    def opening(self, replay):
        """The first texts: what was missed, oldest first, then the unread count."""
        out = [json.dumps({"id": eid, "event": event,
                           "data": api_item(n) if event == "notification" else n})
               for eid, event, n in replay]
        if replay:
            self.last = inbox.stream_id(replay[-1][0])
        return [*out, unread_text(self.count)]

    def texts(self, batch):
        """Texts for live messages, and a keep-alive when the hub's beats say it is idle."""
        out = []
        for m in batch:
            if m is KEEPALIVE:
                self.quiet += 1
                made = [KEEPALIVE_TEXT] if self.quiet >= BEATS_PER_KEEPALIVE else []
            else:
                made = self._live(m)
            if made:
                out.extend(made)
                self.quiet = 0
        return out

    def _live(self, m):
        if m.event == "tick":
            return ['{"event":"tick","data":' + m.raw + "}"]
        if m.event == "unread":
            self.count = int(m.data or 0)
            return [unread_text(self.count)]
        if m.event != "notification":
            return [m.raw]
        if self.last is not None and m.id and inbox.stream_id(m.id) <= self.last:
            return []  # already sent in the replay
        if (m.data or {}).get("status", "unread") == "unread":
            self.count += 1
        return [notification_text(m), unread_text(self.count)]
