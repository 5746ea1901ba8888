"""Whether a Redis connection has anything to read, asked of the kernel, not of gevent.

redis-py asks before every command it sends on a pooled connection (to catch one handed back
unread) and on every non-blocking pub/sub read. Under gevent its `poll` is gevent's emulation,
which sets up and tears down watchers each time: for one event posted to the API, a tenth of
the web worker's CPU. A zero-timeout poll never blocks, so the kernel's own serves as well.
(gevent's also let other greenlets run at each check; the wait for a reply still does.)
"""

import select

from gevent import monkey
from redis._parsers import _HiredisParser
from redis.utils import HIREDIS_AVAILABLE

_poll = monkey.get_original("select", "poll")  # the kernel's, even under gevent


def socket_readable(sock):
    """Bytes (or a hang-up) wait on the socket; never blocks. poll, not select: a web
    process's sockets go past descriptor 1023."""
    poller = _poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class QuickParser(_HiredisParser):
    """hiredis's parser whose zero-timeout `can_read` says no at once when nothing waits:
    neither in hiredis's buffer nor on the socket. Anything else, TLS included (bytes on the
    socket may be a record with no reply in it), is redis-py's own check as before."""

    def can_read(self, timeout=0):
        sock, reader = self._sock, self._reader
        if (timeout == 0 and sock is not None and reader is not None
                and not hasattr(sock, "pending") and not reader.has_data()
                and not socket_readable(sock)):
            return False
        return super().can_read(timeout)


# pinned in requirements.txt; without it, redis-py's default parser
PARSER = {"parser_class": QuickParser} if HIREDIS_AVAILABLE else {}
