"""Every Redis key Tickerbell uses, built here and nowhere else (their meaning:
docs/architecture.md). Lua scripts receive their keys, or for keys made per user inside a
script, the prefix, from this module.

Hash tags (docs/scaling.md): on a Redis Cluster a key's slot is that of the text in its
braces, and a script may touch one slot only. A symbol's keys carry `{SYMBOL}` (its index,
alert rows, price, windows, tick channel, fired batches), a user's keys carry `{uid}` (the
inbox stream, read state, channels). On one Redis the braces are only characters.
"""

import hashlib

# the alert index (webapp/alerts/index.py) and matching (worker/matcher.py, worker/match/)
SYMBOLS = "tb:symbols"  # hash: symbol -> indexed alerts (a hint); the listener follows these
ALERT_SYMBOLS = "tb:alerts:symbol"  # hash: alert id -> the symbol it is indexed under
FIRED = "tb:{fired}"  # stream: the slow path's work
FIRED_DEAD = "tb:{fired}:dead"  # stream: slow-path entries that failed too often
FIRED_BATCHES = "tb:{fired}:batches"  # zset: matcher batches already in FIRED (cluster mode)
# routed notifications' slow steps (webapp/notify/slowsteps.py): one hash tag, so a request's
# entries and the queue's kick flag go out in one pipeline on a cluster too
ROUTED_PREFIX = "tb:{routed}:"  # + queue: stream of batches; + queue:kick: a drain job waits
ROUTED_DEAD = "tb:{routed}:dead"  # stream: batches that failed too often
SERVICE_TOKENS_REVOKED = "tb:service-tokens:revoked"  # channel: a token was revoked

# Lua builds a symbol's set names as PREFIX .. symbol .. TAG_END .. suffix
INDEX_PREFIX = "tb:idx:{"  # + SYMBOL}:suffix
REARM_PREFIX = "tb:rearm:{"
TAG_END = "}:"

# the inbox and the live feed (webapp/inbox, webapp/live); Lua builds a user's stream and
# channel as PREFIX .. uid .. "}"
REPLAY_PREFIX = "tb:replay:{"
USER_CHANNEL_PREFIX = "tb:user:{"
TICKS_CHANNEL_PREFIX = "tb:ticks:{"
WATCH_CHANNEL_PREFIX = "tb:watch:{"

# processes and their health
LISTENER = "tb:listener"  # hash: the listener's status
LISTENER_LEASE = "tb:listener:lease"
# string, 30 s: LISTENER_SHARDS as the listener watchdog runs with it, so /health and `flask
# status` in a shell that does not set it still report every shard
LISTENER_SHARDS = "tb:listener:shards"
PROCESSES = "tb:processes"  # hash: each process's heartbeat


def cluster_seen(configured):
    """string on REDIS_URL (not the cluster: it is what finds the cluster), 30 days: every node
    of the cluster named by REDIS_CLUSTER_NODES `configured` (its text) as last seen, so a
    process starting after those nodes failed over finds the ones that took over."""
    return f"tb:cluster-seen:{configured}"


def sending(log_id):
    """string, an hour: the heartbeat field of the process that claimed a delivery to send."""
    return f"tb:sending:{log_id}"

# Binance's symbol list (webapp/market/symbols.py): one hash tag, as a fetch replaces the
# list and its meta in one MULTI
BINANCE_SYMBOLS = "tb:{binance:symbols}"  # zset, every score 0
BINANCE_SYMBOLS_META = "tb:{binance:symbols}:meta"
BINANCE_SYMBOLS_HOLD = "tb:{binance:symbols}:hold"


def tagged_id(channel, prefix):
    """The user id or symbol in a tagged name: `tb:user:{42}` -> `42`; None if not `prefix`."""
    if channel.startswith(prefix) and channel.endswith("}"):
        return channel[len(prefix):-1]
    return None


def alerts(symbol):
    """Hash: alert id -> packed row (webapp/alerts/index.py ROW_FIELDS), one per symbol."""
    return f"tb:alerts:{{{symbol}}}"


def alerts_fired(symbol):
    """Hash: one-shot alerts of the symbol fired, not yet inactive in SQL -> ms fired."""
    return f"tb:alerts:fired:{{{symbol}}}"


def alerts_version(symbol):
    """Bumped by every index change of the symbol; a rebuild checks it did not move."""
    return f"tb:alerts:version:{{{symbol}}}"


def outbox(symbol):
    """Stream: matcher batches whose users' side is not yet written (cluster mode)."""
    return f"tb:outbox:{{{symbol}}}"


def applied(user_id):
    """Sorted set: `<batch>=<the stream entries it made for the user>` scored by the batch's
    ms, kept a day (cluster mode)."""
    return f"tb:applied:{{{user_id}}}"


def index(symbol, suffix):
    """Armed alerts of one symbol and side (`above`, `below`, `vol`), scored by target."""
    return f"{INDEX_PREFIX}{symbol}{TAG_END}{suffix}"


def rearm(symbol, suffix):
    """Fired recurring alerts of one symbol and side, scored by their re-arm threshold."""
    return f"{REARM_PREFIX}{symbol}{TAG_END}{suffix}"


def window(symbol, window_s, side):
    """A symbol's trailing window for move alerts: a list of `ms:price` entries, at most one
    a second, whose head is the window's lowest (`min`) or highest (`max`) trade."""
    return f"tb:win:{{{symbol}}}:{window_s}:{side}"


def kinds_in_use(symbol):
    """Hash: what the symbol's alerts need the matcher to look at: a window's seconds (move
    alerts on it), `x` crossings, `ch` channels, `cd` alerts with a cooldown -> how many."""
    return f"tb:inuse:{{{symbol}}}"


def price(symbol):
    return f"tb:price:{{{symbol}}}"


def spark(symbol):
    return f"tb:spark:{{{symbol}}}"


def price_history(symbol):
    return f"tb:pricehist:{{{symbol}}}"


def ticks_channel(symbol):
    return f"{TICKS_CHANNEL_PREFIX}{symbol}}}"


def replay(user_id):
    """The user's inbox and live-feed log: a stream, one entry per notification."""
    return f"{REPLAY_PREFIX}{user_id}}}"


def read(user_id):
    return f"tb:read:{{{user_id}}}"


def readmark(user_id):
    return f"tb:readmark:{{{user_id}}}"


def inbox(user_id):
    """The three keys every inbox script takes, in its KEYS order."""
    return [replay(user_id), read(user_id), readmark(user_id)]


def user_channel(user_id):
    return f"{USER_CHANNEL_PREFIX}{user_id}}}"


def watch_channel(user_id):
    """JSON [SYMBOL, ...]: the ticks the user's open streams follow, after an alert change."""
    return f"{WATCH_CHANNEL_PREFIX}{user_id}}}"


def session(sid):
    return f"tb:session:{sid}"


def user_sessions(user_id):
    return f"tb:sessions:{user_id}"


def new_api_key(sid):
    """A just-created API key, waiting for the one page view that shows it."""
    return f"tb:newkey:{sid}"


def new_hook(sid):
    """A just-created webhook URL, waiting for the one page view that shows it."""
    return f"tb:newhook:{sid}"


def hook_seen(hook_id, digest):
    """A body one webhook received in the last minute (sha256 hex): a repeat is dropped."""
    return f"tb:hookseen:{hook_id}:{digest}"


def throttle(scope, ident):
    return f"tb:throttle:{scope}:{ident}"


def delivery_rate(user_id):
    """The user's external deliveries of the last minute, for `max_per_minute`."""
    return f"tb:rate:{user_id}"


def took(user_id):
    """Sorted set: `<request tag>=<the stream entries it made for the user>` scored by the
    request's created ms, kept a day: keyed events requests, each written once per user."""
    return f"tb:took:{{{user_id}}}"


def idempotency(scope, key):
    """An `Idempotency-Key` of the events API; the key itself is stored only hashed."""
    return f"tb:idem:{scope}:{hashlib.sha256(key.encode()).hexdigest()}"


def breaker(name):
    return f"tb:breaker:{name}"


def listener_status(shard=0):
    """Hash: one listener shard's status for /health; shard 0 keeps the single listener's name."""
    return LISTENER if shard == 0 else f"{LISTENER}:{shard}"


def listener_lease(shard=0):
    """String: the token of the process running the shard; shard 0 keeps the old name."""
    return LISTENER_LEASE if shard == 0 else f"{LISTENER_LEASE}:{shard}"


def listener_watch(shard=0):
    """String, on the queues' Redis: a watchdog is checking the shard's job (held seconds)."""
    return f"tb:listener:watch:{shard}"


def connect_budget(host):
    """Zset: the Binance connection attempts of the last window from one egress host."""
    return f"tb:connects:{host}"


def routed(queue):
    """Stream: batches of routed notifications waiting for their slow steps on RQ `queue`."""
    return f"{ROUTED_PREFIX}{queue}"


def routed_kick(queue):
    """String, with a TTL: a drain job for routed(queue) is queued and has not started."""
    return f"{ROUTED_PREFIX}{queue}:kick"
