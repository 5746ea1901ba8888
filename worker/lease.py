"""A Redis lease: SET NX PX with a token, renewed on a heartbeat, so one listener runs."""

import logging
import os
import socket
import uuid

LEASE_KEY = "tb:listener:lease"
DEFAULT_LEASE_TTL_S = 10.0  # renewed every second: nine missed renewals in a row lose it

log = logging.getLogger(__name__)

# Keep the lease if we hold it, or take it back if it lapsed and nobody else took it
# (e.g. Redis restarted without its data); never take it from another holder.
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] or not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    def __init__(self, redis, key=LEASE_KEY, ttl_s=DEFAULT_LEASE_TTL_S):
        self.redis, self.key, self.ttl_ms = redis, key, int(ttl_s * 1000)
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)

    def acquire(self):
        return bool(self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def renew(self):
        """Extend the lease; False means another instance holds it now."""
        return bool(self._renew(keys=[self.key], args=[self.token, self.ttl_ms]))

    def release(self):
        self._release(keys=[self.key], args=[self.token])

    def holder(self):
        return self.redis.get(self.key)

    def wait(self, stop, poll_s=None):
        """Block until the lease is ours (True) or `stop` is set (False)."""
        poll_s = poll_s or self.ttl_ms / 3000
        told = False
        while not stop.is_set():
            if self.acquire():
                log.info("event=lease_acquired key=%s token=%s", self.key, self.token)
                return True
            if not told:
                log.info("event=lease_wait key=%s holder=%s", self.key, self.holder())
                told = True
            stop.wait(poll_s)
        return False
