"""Every Redis key Tickerbell uses, built here and nowhere else (their meaning:
docs/architecture.md). Lua scripts receive their keys, or for keys made per user inside a
script, the prefix, from this module.
"""

import hashlib

# the alert index (webapp/alerts/index.py) and matching (worker/matcher.py, worker/match.lua)
ALERTS = "tb:alerts"  # hash: alert id -> packed row
ALERTS_VERSION = "tb:alerts:version"  # bumped by every index change; a rebuild WATCHes it
ALERTS_FIRED = "tb:alerts:fired"  # one-shot alerts fired, not yet inactive in SQL
SYMBOLS = "tb:symbols"  # hash: symbol -> indexed alerts; the listener subscribes to these
FIRED = "tb:fired"  # stream: the slow path's work
FIRED_DEAD = "tb:fired:dead"  # stream: slow-path entries that failed too often

INDEX_PREFIX = "tb:idx:"  # + SYMBOL:suffix
REARM_PREFIX = "tb:rearm:"

# the inbox and the live feed (webapp/inbox, webapp/live)
REPLAY_PREFIX = "tb:replay:"
USER_CHANNEL_PREFIX = "tb:user:"
TICKS_CHANNEL_PREFIX = "tb:ticks:"
WATCH_CHANNEL_PREFIX = "tb:watch:"

# processes and their health
LISTENER = "tb:listener"  # hash: the listener's status
LISTENER_LEASE = "tb:listener:lease"
PROCESSES = "tb:processes"  # hash: each process's heartbeat

# Binance's symbol list (webapp/market/symbols.py)
BINANCE_SYMBOLS = "tb:binance:symbols"  # zset, every score 0
BINANCE_SYMBOLS_META = "tb:binance:symbols:meta"
BINANCE_SYMBOLS_HOLD = "tb:binance:symbols:hold"


def index(symbol, suffix):
    """Armed alerts of one symbol and side (`above`, `below`, `vol`), scored by target."""
    return f"{INDEX_PREFIX}{symbol}:{suffix}"


def rearm(symbol, suffix):
    """Fired recurring alerts of one symbol and side, scored by their re-arm threshold."""
    return f"{REARM_PREFIX}{symbol}:{suffix}"


def window(symbol, window_s, side):
    """A symbol's trailing window for move alerts: a list of `ms:price` entries, at most one
    a second, whose head is the window's lowest (`min`) or highest (`max`) trade."""
    return f"tb:win:{symbol}:{window_s}:{side}"


def kinds_in_use(symbol):
    """Hash: what the symbol's alerts need the matcher to look at: a window's seconds (move
    alerts on it), `x` crossings, `ch` channels, `cd` alerts with a cooldown -> how many."""
    return f"tb:inuse:{symbol}"


def price(symbol):
    return f"tb:price:{symbol}"


def spark(symbol):
    return f"tb:spark:{symbol}"


def price_history(symbol):
    return f"tb:pricehist:{symbol}"


def ticks_channel(symbol):
    return f"{TICKS_CHANNEL_PREFIX}{symbol}"


def replay(user_id):
    """The user's inbox and live-feed log: a stream, one entry per notification."""
    return f"{REPLAY_PREFIX}{user_id}"


def read(user_id):
    return f"tb:read:{user_id}"


def readmark(user_id):
    return f"tb:readmark:{user_id}"


def inbox(user_id):
    """The three keys every inbox script takes, in its KEYS order."""
    return [replay(user_id), read(user_id), readmark(user_id)]


def user_channel(user_id):
    return f"{USER_CHANNEL_PREFIX}{user_id}"


def watch_channel(user_id):
    """JSON [SYMBOL, ...]: the ticks the user's open streams follow, after an alert change."""
    return f"{WATCH_CHANNEL_PREFIX}{user_id}"


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


def idempotency(scope, key):
    """An `Idempotency-Key` of the events API; the key itself is stored only hashed."""
    return f"tb:idem:{scope}:{hashlib.sha256(key.encode()).hexdigest()}"


def breaker(name):
    return f"tb:breaker:{name}"
