"""Publishing on the data plane: sharded pub/sub on a Redis Cluster, plain pub/sub on one Redis.

On a cluster a plain PUBLISH is copied to every node; SPUBLISH (Redis 7) stays on the shard
that owns the channel's slot, and only its SSUBSCRIBErs hear it. Our channels carry hash tags
(webapp/keys.py), so a user's channel lives beside the user's stream.
"""

from webapp.extensions import is_cluster


def command(r):
    """The publish command for `r`, as Lua scripts take it in ARGV."""
    return "SPUBLISH" if is_cluster(r) else "PUBLISH"


def publish(r, channel, message):
    """Publish `message` on `channel`; returns how many subscribers heard it."""
    if is_cluster(r):
        return r.spublish(channel, message)
    return r.publish(channel, message)
