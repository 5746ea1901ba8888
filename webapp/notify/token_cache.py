"""The live service tokens a process remembers, forgotten on every revoke.

A revoke publishes on keys.SERVICE_TOKENS_REVOKED after its commit; each process holds one
subscription to it and reads what has arrived (a non-blocking read, no round trip) before it
trusts its memory. The memory is trusted only while the subscription is known to be up:
subscribed, with a PING answered in the last STALE_S seconds. A reconnect, an error or a
silent connection forgets everything, since a revoke may have been missed meanwhile; until the
subscription is back (or after an idle spell, until the next PING's answer) every request
looks its token up in SQL.
"""

import threading
import time

import redis

from webapp import keys

PING_S = 1  # a PING on the subscription this often, sent by a request that finds it due
STALE_S = 3  # no answer for this long: the subscription is not known to be up
MAX_READS = 1000  # messages one request reads at most


class TokenCache:
    """digest -> LiveToken, valid while the revoke subscription is known to be up."""

    def __init__(self, client):
        self.client = client
        self.lock = threading.Lock()  # one reader of the subscription at a time (greenlets)
        self.pubsub = None
        self.tokens = {}
        self.epoch = 0  # bumped whenever the memory is forgotten
        self.up = False
        self.pinged = self.answered = 0.0

    def current(self):
        """The epoch to remember a lookup under, or None when memory cannot be trusted."""
        with self.lock:
            try:
                self._read()
            except (redis.RedisError, OSError):
                self._close()
            fresh = time.monotonic() - self.answered <= STALE_S
            return self.epoch if self.up and fresh else None

    def get(self, digest, epoch):
        known = self.tokens.get(digest)
        return known[0] if known is not None and known[1] == epoch else None

    def remember(self, digest, token, epoch):
        if epoch is not None:
            self.tokens[digest] = token, epoch

    def forget(self, digest):
        self.tokens.pop(digest, None)

    def _read(self):
        now = time.monotonic()
        if self.pubsub is None:
            self.pubsub = self.client.pubsub()
            self.pubsub.subscribe(keys.SERVICE_TOKENS_REVOKED)
            # redis-py reconnects and subscribes again by itself: that gap may have lost a
            # revoke, so any new connection forgets all until its confirmation is read
            self.pubsub.connection.register_connect_callback(self._reconnected)
            self.pinged = now
            self._handle(self.pubsub.get_message(timeout=STALE_S), now)  # its confirmation
        for _ in range(MAX_READS):
            checking = self.pubsub.health_check_response_counter > 0  # redis-py's own PING
            message = self.pubsub.get_message(timeout=0)
            if message is not None:
                self._handle(message, now)
            # None may then stand for the PING's reply, which redis-py swallows: read on while
            # anything waits, or a revoke behind it would be left for a later request
            elif not checking or not self.pubsub.connection.can_read(timeout=0):
                break
        else:  # never the case unless something floods the channel: trust nothing
            self._close()
            return
        if self.pinged > self.answered and now - self.pinged > STALE_S:
            self._close()  # the subscription or the last PING went unanswered
        elif now - self.pinged > PING_S:
            self.pubsub.ping()
            self.pinged = now

    def _handle(self, message, now):
        if message is None:
            return
        self.answered = now  # anything the server sends shows the connection alive
        if message["type"] == "subscribe":
            self._forget(up=True)
        elif message["type"] == "message":  # a revoke: every token is read again
            self._forget(up=self.up)

    def _reconnected(self, connection):
        self._forget(up=False)

    def _forget(self, up):
        self.tokens.clear()
        self.epoch += 1
        self.up = up

    def _close(self):
        """Forget all and drop the subscription; the next request subscribes again."""
        self._forget(up=False)
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            try:
                if pubsub.connection is not None:  # it goes back to the pool
                    pubsub.connection.deregister_connect_callback(self._reconnected)
                pubsub.close()
            except (redis.RedisError, OSError):
                pass
