"""Fixed-window counters in Redis, for login throttling and rate limits."""

from webapp import keys
from webapp.extensions import get_redis


def _key(scope, ident):
    return keys.throttle(scope, ident)


def blocked_for(scope, ident, limit):
    """Seconds until `ident` may try again, or 0 if it is under `limit`."""
    r = get_redis()
    key = _key(scope, ident)
    count = r.get(key)
    if count is None or int(count) < limit:
        return 0
    return max(r.ttl(key), 1)


def hit(scope, ident, window=60):
    """Count one attempt in the current window; returns the count."""
    key = _key(scope, ident)
    pipe = get_redis().pipeline()
    pipe.set(key, 0, ex=window, nx=True)  # starts the window; works on Redis 6.2 too
    pipe.incr(key)
    _, count = pipe.execute()
    return count


# A count whose window has ended is left alone: decremented, it would be made again
# without a TTL, and hold that window open for good.
_FORGIVE = "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECR', KEYS[1]) end"


def forgive(scope, ident):
    """Take back one attempt counted in the current window."""
    get_redis().eval(_FORGIVE, 1, _key(scope, ident))


def reset(scope, ident):
    get_redis().delete(_key(scope, ident))
