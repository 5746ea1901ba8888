"""Which channels a web process needs, and which are live on its pub/sub link.

A channel is needed while one of the process's streams needs it (its user's channel, its
user's watch channel, a watched symbol's ticks): the first stream subscribes it, the last
one leaving unsubscribes it. Streams come and go on any greenlet, often inside the event loop
where nothing may block, so they only count here; the hub's reader alone sends the commands
(`changes()`), many channels to a command, and reports each confirmation (`replied()`). A
stream starts reading its replay only once its channels are live, so nothing published
between the replay and the live feed is lost.

Replies come back in the order the commands went out, so a channel is live when the last
command sent for it was a subscribe and every reply for it has arrived: a subscribe confirmed
while its unsubscribe is still on the way is not live.
"""

import os
import threading


class Subscriptions:
    """Reference counts of channels, the live set, the events streams wait on, and the pipe
    that wakes the reader when there is something to send."""

    def __init__(self):
        # A write to the pipe never blocks (and is skipped while a wake is pending), so the
        # event loop may count a stream out.
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._woken = False
        # Never held across anything that can yield (see fanout.Hub's lock).
        self._lock = threading.Lock()
        self.wanted = {}  # channel -> how many streams need it
        self.live = set()  # subscribed on the current link, confirmed, no unsubscribe sent
        self._changed = set()  # wanted or not since the reader last looked
        self._waiters = {}  # channel -> Event set when it turns live
        # the reader's alone
        self._issued = set()  # subscribed (sent, maybe not confirmed) on the current link
        self._replies = {}  # channel -> replies still to come for it

    def want(self, channels):
        """Count a stream's channels in; returns the events to wait on for those not live."""
        waits, new = [], False
        with self._lock:
            for channel in channels:
                count = self.wanted.get(channel, 0)
                self.wanted[channel] = count + 1
                if count == 0:
                    self._changed.add(channel)
                    new = True
                if channel not in self.live:
                    waits.append(self._waiters.setdefault(channel, threading.Event()))
        if new:
            self.wake()
        return waits

    def unwant(self, channels):
        """Count a stream's channels out; a channel no stream needs is unsubscribed."""
        released = []
        with self._lock:
            for channel in channels:
                count = self.wanted.get(channel, 0) - 1
                if count > 0:
                    self.wanted[channel] = count
                    continue
                self.wanted.pop(channel, None)
                self._changed.add(channel)
                released.append(self._waiters.pop(channel, None))
        if released:
            self.wake()
        for event in released:  # whoever still waits looks again (and finds its stream gone)
            if event is not None:
                event.set()

    def wake(self):
        """Have the reader look at the counts again (any greenlet; never blocks)."""
        if self._woken:
            return
        self._woken = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # full (it is awake anyway) or closed (the hub stopped)
            pass

    def fileno(self):
        """Readable when the reader was woken (for select)."""
        return self._wake_r

    def woke(self):
        """The reader saw the wake-up: the next one writes again."""
        self._woken = False  # before draining: a wake from now on is not lost
        try:
            os.read(self._wake_r, 4096)
        except OSError:
            pass

    def close(self):
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = -1

    def pending(self):
        """True when the reader has commands to send."""
        return bool(self._changed)

    def changes(self):
        """The reader's next commands: (channels to subscribe, channels to unsubscribe)."""
        with self._lock:
            changed, self._changed = self._changed, set()
            subscribe = [c for c in changed if c in self.wanted and c not in self._issued]
            unsubscribe = [c for c in changed if c not in self.wanted and c in self._issued]
            self.live.difference_update(unsubscribe)  # from now on, a stream waits again
        for channel in subscribe:
            self._issued.add(channel)
        for channel in unsubscribe:
            self._issued.discard(channel)
        for channel in (*subscribe, *unsubscribe):
            self._replies[channel] = self._replies.get(channel, 0) + 1
        return subscribe, unsubscribe

    def replied(self, channel):
        """A subscribe or unsubscribe reply for `channel` arrived on the link; False when no
        command of ours awaited one (the server dropped the channel: its slot moved)."""
        if channel not in self._replies:
            return False
        left = self._replies.get(channel, 0) - 1
        if left > 0:
            self._replies[channel] = left
            return True
        self._replies.pop(channel, None)
        if channel not in self._issued:
            return True
        with self._lock:
            self.live.add(channel)
            event = self._waiters.pop(channel, None)
        if event is not None:
            event.set()
        return True

    def relink(self):
        """A new link: nothing is live on it, and everything wanted is to be subscribed."""
        with self._lock:
            self.live.clear()
            self._changed.update(self.wanted)
        self._issued.clear()
        self._replies.clear()

    def unlink(self):
        """The link is gone: nothing is live until the next one subscribes it again."""
        with self._lock:
            self.live.clear()
