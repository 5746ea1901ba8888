"""Which listener shard follows a symbol, and the names each shard runs under.

With LISTENER_SHARDS=N the symbols are split by CRC-32 of the upper-case symbol, mod N:
the same on every host and every Python run (Python's own `hash()` of a str is salted per
process). Shard 0 keeps the single listener's job id, lease and status key, so N=1 is the
listener as it always was.
"""

import zlib

from webapp import clock, keys
from webapp.errors import REDIS_FAULTS
from webapp.extensions import get_redis

JOB_ID = "tickerbell-listener"
LIVE_BEAT_MS = 10_000  # as /health judges a listener alive


def shard_of(symbol, shards):
    """The shard in [0, shards) that follows `symbol`."""
    return zlib.crc32(symbol.upper().encode()) % shards if shards > 1 else 0


def job_id(shard):
    """The RQ job id of the shard's listener job (fixed, so the watchdog finds it)."""
    return JOB_ID if shard == 0 else f"{JOB_ID}-{shard}"


def count(config):
    """LISTENER_SHARDS as set; 1 when unset."""
    return max(1, int(config.get("LISTENER_SHARDS") or 1))


def is_set(config):
    return bool(config.get("LISTENER_SHARDS"))


def following(config):
    """The count a process works by: LISTENER_SHARDS as set, else the running listeners'
    (a second shell's worker or listener: a split of its own would give some symbols two
    listeners and others none), else 1."""
    return count(config) if is_set(config) else running() or 1


def running():
    """The shard count the running listeners work by: as shard 0's says it with each beat,
    else as a watchdog with the count set last said it (kept 30 s); None when none says,
    or the data plane does not answer."""
    try:
        with get_redis().pipeline(transaction=False) as pipe:
            pipe.hmget(keys.listener_status(0), "shards", "heartbeat")
            pipe.get(keys.LISTENER_SHARDS)
            (beating, beat), said = pipe.execute()
    except REDIS_FAULTS:
        return None
    if beating and beat and clock.now_ms() - int(beat) <= LIVE_BEAT_MS:
        return int(beating)
    return int(said) if said else None
