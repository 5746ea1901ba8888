"""Which listener shard follows a symbol, and the names each shard runs under.

With LISTENER_SHARDS=N the symbols are split by CRC-32 of the upper-case symbol, mod N:
the same on every host and every Python run (Python's own `hash()` of a str is salted per
process). Shard 0 keeps the single listener's job id, lease and status key, so N=1 is the
listener as it always was.
"""

import zlib

from webapp import keys
from webapp.errors import REDIS_FAULTS
from webapp.extensions import get_redis

JOB_ID = "tickerbell-listener"


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


def running():
    """The shard count the running listeners' watchdog last said (kept 30 s); None when
    none said it lately, or the data plane does not answer."""
    try:
        said = get_redis().get(keys.LISTENER_SHARDS)
    except REDIS_FAULTS:
        return None
    return int(said) if said else None
