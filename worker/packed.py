"""The matcher's pipelined script calls on one Redis, packed by us.

A quiet tick's call names 13 keys and 11 arguments, and redis-py packs each of them again for
every tick: the third of the listener's CPU in a market-wide burst (docs/performance.md). All
but four arguments are the same on every tick of a stream, so a call is packed as RESP once
per stream and way of calling (its level keys or every key), then only the tick's value, time,
trade id and flag are added. The connection comes from the client's pool and is retried as
redis-py retries a pipeline (the matcher's calls may run twice: a tick seen is dropped).
"""

import threading
from contextlib import contextmanager
from time import perf_counter

from redis.exceptions import ResponseError

_thread = threading.local()


def bulk(value):
    """One RESP bulk string."""
    data = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


class PackedCalls:
    """EVALSHA calls of one script, each with the match script's ARGV 1-7 then a fixed tail."""

    def __init__(self, redis, sha, tail):
        self.pool = redis.connection_pool
        self._sha = sha
        self._tail = b"".join(bulk(part) for part in tail)
        self._words = 3 + len(tail)  # EVALSHA, the sha, numkeys, the tail
        self._heads = {}  # (first key, key count, ARGV[1], ARGV[2]) -> EVALSHA to ARGV[2]

    def _head(self, names, args):
        key = (names[0], len(names), args[0], args[1])
        head = self._heads.get(key)
        if head is None:
            parts = [bulk("EVALSHA"), bulk(self._sha),
                     bulk(len(names)), *(bulk(name) for name in names),
                     bulk(args[0]), bulk(args[1])]
            head = self._heads[key] = b"".join(parts)
        return head

    def pack(self, calls):
        """`calls`, [(names, args)], as the bytes of one write."""
        tail, words, parts = self._tail, self._words, []
        for names, args in calls:
            parts += (b"*%d\r\n" % (words + len(names) + len(args)), self._head(names, args))
            for arg in args[2:]:
                data = str(arg).encode()
                parts.append(b"$%d\r\n%b\r\n" % (len(data), data))
            parts.append(tail)
        return b"".join(parts)

    def execute(self, calls):
        """Send `calls`, [(names, args)], in one write; their replies in order, a
        ResponseError in place of a call that failed. Raises redis.ConnectionError (or
        TimeoutError) when the round could not be made."""
        packed = self.pack(calls)
        with self.connection() as conn:
            return conn.retry.call_with_retry(lambda: _round(conn, packed, len(calls)),
                                              lambda error: conn.disconnect())

    @contextmanager
    def connection(self):
        """A connection of the pool, for calls sent ahead of their replies: cut if the block
        ends in an error, as replies may be left unread on it."""
        conn = self.pool.get_connection()
        try:
            yield conn
        except BaseException:
            conn.disconnect()
            raise
        finally:
            self.pool.release(conn)


@contextmanager
def meanwhile(work):
    """Within the block, a round sent by this thread calls `work()` once sent, before it reads
    the replies: Redis runs the round meanwhile, and the notifications it publishes wait for
    nothing (the replies only say what was done). `work` must not raise: the connection is
    cut if it does (its replies would be left unread for the next command)."""
    before, _thread.work = getattr(_thread, "work", None), work
    try:
        yield
    finally:
        _thread.work = before


def took_meanwhile():
    """Seconds this thread's rounds spent in `meanwhile`'s work since the last ask: not
    Redis's time, which a round's duration is meant to show."""
    spent, _thread.work_s = getattr(_thread, "work_s", 0.0), 0.0
    return spent


def _round(conn, packed, n):
    conn.send_packed_command([packed])
    work = getattr(_thread, "work", None)
    if work is not None:
        started = perf_counter()
        try:
            work()
        except BaseException:
            conn.disconnect()
            raise
        _thread.work_s = getattr(_thread, "work_s", 0.0) + perf_counter() - started
    replies = []
    for _ in range(n):
        try:
            replies.append(conn.read_response())
        except ResponseError as exc:  # read whole: the connection stays in step
            replies.append(exc)
    return replies
