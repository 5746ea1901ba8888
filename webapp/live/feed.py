"""One stream's events, whichever transport carries them (/stream as SSE, /ws as JSON).

A `Feed` turns the replay and the hub's batches into events `(event, id, payload)`, in the
order the client receives them. It alone decides what a stream says: which replayed
notifications pop up a toast, that a live copy of a replayed entry is dropped, the unread
count after every change, and when an idle stream sends a keep-alive. A transport only
formats each event.

The payload of a message's events is the `fanout.Message` (a replayed entry is made into
one), so a transport renders it once into `message.cache` and every stream of that message
reuses the result: what keeps a 10k-stream fan-out cheap. `unread` carries the count,
`keepalive` nothing. A live notification, and each of the latest few unread replayed ones,
is followed by `toast` (same payload), which only SSE shows.
"""

import json

from webapp.inbox import service as inbox
from webapp.live.fanout import BEATS_PER_KEEPALIVE, KEEPALIVE, Message

TOASTS_ON_REPLAY = 3  # a long gap replays into the list, but pops up only the latest few
KEEPALIVE_EVENT = ("keepalive", None, None)


def api_item(data):
    """The published notification (dict or JSON text) as the API's item."""
    n = json.loads(data) if isinstance(data, str) else dict(data)
    if isinstance(n.get("data"), str):
        n["data"] = json.loads(n["data"] or "{}")
    n.setdefault("created_at", 0)
    return inbox.to_api(n)


def message_item(message):
    """A notification message's API item, made once for every stream and transport."""
    item = message.cache.get("api")
    if item is None:
        item = message.cache["api"] = api_item(message.data)
    return item


class Feed:
    """What one stream has sent: the unread count, the last replayed id, beats since a write."""

    __slots__ = ("count", "last", "quiet", "insisting")

    def __init__(self, unread, insisting=frozenset()):
        self.count, self.last, self.quiet = unread, None, 0
        self.insisting = insisting  # the types that insist for the user, read once a stream

    def _mark(self, m):
        """Mark a notification whose type insists: its item and toast get an Acknowledge
        button (the cache is the message's, and every stream of a user has the same types)."""
        if self.insisting and "insists" not in m.cache:
            m.cache["insists"] = (m.data or {}).get("type") in self.insisting
        return m

    def opening(self, replay, ended=None):
        """What was missed, oldest first, then the unread count. `ended`: {nid: escalation}
        of replayed ones whose reminders have ended (acknowledged, say): shown as they stand."""
        out, toasts_from = [], len(replay) - TOASTS_ON_REPLAY
        for i, (eid, event, n) in enumerate(replay):
            message = self._mark(Message(event, n, None, eid))  # raw None: never published
            if ended and n.get("id") in ended:
                message.cache["esc"] = ended[n["id"]]
            out.append((event, eid, message))
            if event == "notification" and i >= toasts_from and n["status"] == "unread":
                out.append(("toast", eid, message))  # one already read pops up nothing
        if replay:
            self.last = inbox.stream_id(replay[-1][0])
        out.append(("unread", None, self.count))
        return out

    def live(self, batch):
        """Events for live messages, and a keep-alive when the hub's beats say it is idle."""
        out = []
        for m in batch:
            if m is KEEPALIVE:
                self.quiet += 1
                if self.quiet < BEATS_PER_KEEPALIVE:
                    continue
                out.append(KEEPALIVE_EVENT)
            elif m.event == "notification":
                eid = m.id
                if self.last is not None and eid and inbox.stream_id(eid) <= self.last:
                    continue  # already sent in the replay
                if (m.data or {}).get("status", "unread") == "unread":
                    self.count += 1
                self._mark(m)
                out += (("notification", eid, m), ("toast", eid, m), ("unread", None, self.count))
            elif m.event == "unread":
                self.count = int(m.data or 0)
                out.append(("unread", None, self.count))
            else:
                out.append((m.event, m.id, m))
            self.quiet = 0  # anything written puts off the next keep-alive
        return out
