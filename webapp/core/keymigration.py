"""`flask redis-migrate`: a single-Redis install's keys from before hash tags, moved or dropped.

Hash tags came into the key names (webapp/keys.py: `tb:replay:42` is now `tb:replay:{42}`) so
that a Redis Cluster keeps a user's or a symbol's keys in one slot. On one Redis the old names
are left over. What a user or the digests would miss moves to its new name; what is rebuilt
anyway goes: the listener rebuilds the alert index from SQL at its start, ticks refill the
move-alert windows. `make run` runs this before any process starts (devtools/launch.py); it
is idempotent: a second run finds nothing left to do. On a Redis Cluster it does nothing: a
cluster never held the old layout.
"""

import logging
import re

import click

from webapp import keys
from webapp.core import logs
from webapp.extensions import get_redis, is_cluster

# old prefix -> the new name of the user id or symbol after it
MOVED = {
    "tb:replay:": keys.replay,
    "tb:read:": keys.read,
    "tb:readmark:": keys.readmark,
    "tb:price:": keys.price,
    "tb:spark:": keys.spark,
    "tb:pricehist:": keys.price_history,
}
# the newer key is the fresher: a price or sparkline already written under the new name wins
FRESHER = {"tb:price:", "tb:spark:"}
DROPPED_PREFIXES = ("tb:idx:", "tb:rearm:", "tb:inuse:", "tb:win:")
DROPPED = ("tb:alerts", "tb:alerts:fired", "tb:alerts:version")
RENAMED = {"tb:binance:symbols": keys.BINANCE_SYMBOLS,
           "tb:binance:symbols:meta": keys.BINANCE_SYMBOLS_META,
           "tb:binance:symbols:hold": keys.BINANCE_SYMBOLS_HOLD}
STREAMS = {"tb:fired": keys.FIRED, "tb:fired:dead": keys.FIRED_DEAD}
OLD_ID = re.compile(r"[^:{}]+")  # an old name's id part: no tag, no further parts
OLD_PARTS = re.compile(r"[^{}]+")  # `SYMBOL:suffix` and the like, untagged
SCAN_COUNT = 1000
STREAM_CHUNK = 500

log = logging.getLogger(__name__)


def old_names(r, prefix, rest=OLD_ID):
    """The keys under `prefix` in the old layout (the rest of the name matching `rest`);
    a new name is tagged (`{...}`), which no old name was."""
    return [name for name in r.scan_iter(match=f"{prefix}*", count=SCAN_COUNT)
            if rest.fullmatch(name[len(prefix):])]


def _move(r, prefix, new_name, counts):
    for old in old_names(r, prefix):
        new = new_name(old[len(prefix):])
        if r.renamenx(old, new):
            counts["moved"] += 1
        elif prefix in FRESHER:
            counts["dropped"] += r.delete(old)
        elif prefix == "tb:pricehist:":  # both hold samples: the digests want them all
            r.zunionstore(new, [new, old], aggregate="MAX")
            counts["moved"] += r.delete(old)
        else:  # a user's keys written since the upgrade win; the old expire within 7 days
            counts["kept"] += 1


def _drop(r, counts):
    for prefix in DROPPED_PREFIXES:
        for old in old_names(r, prefix, OLD_PARTS):
            counts["dropped"] += r.delete(old)
    counts["dropped"] += r.delete(*DROPPED)
    for old, new in RENAMED.items():
        if r.exists(old) and not r.renamenx(old, new):
            r.delete(old)  # the list fetched since is the one to keep


def _drain(r, old, new, counts):
    """The old slow-path stream into the new one: renamed whole (its consumer group and
    pending entries with it) if the new one is missing, else copied over entry by entry."""
    if not r.exists(old):
        return
    if r.renamenx(old, new):
        counts["moved"] += 1
        return
    while entries := r.xrange(old, count=STREAM_CHUNK):
        # one MULTI a chunk: a crash copies no entry twice, and the slow path is idempotent
        # by notification id should a retry meet one anyway
        with r.pipeline(transaction=True) as pipe:
            for _, fields in entries:
                pipe.xadd(new, fields)
            pipe.xdel(old, *(entry_id for entry_id, _ in entries))
            pipe.execute()
        counts["entries"] += len(entries)
    r.delete(old)


def migrate(r):
    """Move or drop every old-layout key of one Redis; returns what it did, by kind."""
    counts = {"moved": 0, "kept": 0, "dropped": 0, "entries": 0}
    if is_cluster(r):
        return counts
    for prefix, new_name in MOVED.items():
        _move(r, prefix, new_name, counts)
    _drop(r, counts)
    for old, new in STREAMS.items():
        _drain(r, old, new, counts)
    if any(counts.values()):
        logs.event(log, "redis_keys_migrated", **counts)
    return counts


@click.command("redis-migrate")
def redis_migrate():
    """Rename a single Redis's keys to the hash-tagged layout (idempotent)."""
    r = get_redis()
    if is_cluster(r):
        click.echo("Redis Cluster: nothing to migrate (the old layout was single-Redis only)")
        return
    counts = migrate(r)
    click.echo("redis keys: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))


COMMANDS = [redis_migrate]
