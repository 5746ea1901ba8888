"""A Redis lease: SET NX PX with a token, renewed on a heartbeat, so one listener runs."""

import logging
import os
import socket
import time
import uuid

from webapp import keys
from webapp.core import logs
from webapp.core.outage import REDIS_DOWN, Outage

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
    def __init__(self, redis, key=keys.LISTENER_LEASE, ttl_s=DEFAULT_LEASE_TTL_S):
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
        """Give the lease up (best effort: if Redis is gone, it lapses on its own)."""
        try:
            self._release(keys=[self.key], args=[self.token])
        except REDIS_DOWN:
            pass

    def holder(self):
        return self.redis.get(self.key)

    def break_if_dead(self):
        """Free a lease held by a process of this host that no longer exists.

        A listener killed with SIGKILL leaves its lease to lapse (up to the TTL); when its
        replacement starts on the same host it can tell the holder is gone and take over at
        once. Returns the freed holder, or None.
        """
        holder = self.holder()
        if not holder or not _dead_here(holder):
            return None
        if self._release(keys=[self.key], args=[holder]):
            logs.event(log, "lease_freed", key=self.key, holder=holder)
            return holder
        return None

    def wait(self, stop, poll_s=None, give_up_s=None):
        """Block until the lease is ours (True), or `stop` is set or `give_up_s` passed
        (False); rides out Redis."""
        poll_s = poll_s or self.ttl_ms / 3000
        told, outage = False, Outage("listener-lease")
        deadline = None if give_up_s is None else time.monotonic() + give_up_s
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                self.break_if_dead()
                if self.acquire():
                    outage.recovered()
                    logs.event(log, "lease_acquired", key=self.key, token=self.token)
                    return True
                if not told:
                    logs.event(log, "lease_wait", key=self.key, holder=self.holder())
                    told = True
            except REDIS_DOWN as exc:
                stop.wait(outage.failed(exc))
                continue
            stop.wait(poll_s)
        return False


def _dead_here(token):
    """True when `token` (host:pid:nonce) names a process of this host that has exited."""
    host, _, pid = token.rpartition(":")[0].rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):  # alive under another user, or not a pid
        return False
    return False
