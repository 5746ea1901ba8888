"""Binance's list of trading symbols: fetched from exchangeInfo, cached in Redis, checked on create.

Web requests only read the cache; the `symbols-refresh` job fetches. Until a fetch has
succeeded (or when the list is two days old, or came from another BINANCE_API_URL), a
symbol is "unverified" and accepted; with a list, a symbol not on it is "unlisted".
"""

import difflib
import logging

import requests
from flask import current_app

from webapp import clock, keys
from webapp.extensions import get_redis

# keys.BINANCE_SYMBOLS: a zset, every score 0: O(1) membership and prefix search by lex
# keys.BINANCE_SYMBOLS_META: a hash: source, fetched_ms, count, wanted_ms, error, error_ms
# keys.BINANCE_SYMBOLS_HOLD: a string with a TTL: no fetch while it lives
KEY, META, HOLD = keys.BINANCE_SYMBOLS, keys.BINANCE_SYMBOLS_META, keys.BINANCE_SYMBOLS_HOLD

LISTED, UNLISTED, UNVERIFIED = "listed", "unlisted", "unverified"
# Weight 20 instead of the whole exchange: spot symbols that trade now, no permission sets.
PARAMS = {"permissions": "SPOT", "symbolStatus": "TRADING", "showPermissionSets": "false"}
DEFAULT_TIMEOUT = (3.05, 10)  # connect, read (s); the job itself times out after a minute
DEFAULT_REFRESH_S = 24 * 3600
DEFAULT_STALE_S = 2 * 24 * 3600  # a list this old no longer refuses: its refreshes failed
DEFAULT_RECHECK_S = 3600  # a miss on a list this old asks for a new one (a new listing?)
DEFAULT_HOLD_S = 60  # at most one fetch a minute, however many ask
DEFAULT_BANNED_S = 600  # after a 418 / 429 that gave no Retry-After
MAX_SUGGESTIONS = 20
POPULAR_QUOTES = ("USDT", "USDC", "FDUSD", "BTC", "ETH", "BNB")  # suggested first, in this order

log = logging.getLogger(__name__)


def _fresh_list(meta, now_ms):
    """(known, fresh) for the cached list; one from another BINANCE_API_URL is no list."""
    if not meta.get("fetched_ms") or meta.get("source") != current_app.config["BINANCE_API_URL"]:
        return False, False
    return True, now_ms - int(meta["fetched_ms"]) <= DEFAULT_STALE_S * 1000


def _lookup(symbols, now_ms):
    with get_redis().pipeline(transaction=False) as pipe:
        pipe.hgetall(META)
        pipe.zmscore(KEY, symbols)
        meta, scores = pipe.execute()
    known, fresh = _fresh_list(meta, now_ms)
    miss = UNLISTED if fresh else UNVERIFIED
    found = {s: LISTED if known and score is not None else miss
             for s, score in zip(symbols, scores, strict=True)}
    return meta, found


def verdicts(symbols, now_ms=None):
    """{symbol: listed, unlisted or unverified}, in one round trip."""
    symbols = sorted(set(symbols))
    return _lookup(symbols, now_ms or clock.now_ms())[1] if symbols else {}


def refusal(symbol, now_ms=None):
    """Why an alert on `symbol` is refused (not trading on Binance), or None to accept it."""
    now_ms = now_ms or clock.now_ms()
    meta, found = _lookup([symbol], now_ms)
    if found[symbol] != UNLISTED:
        return None
    r = get_redis()
    if now_ms - int(meta["fetched_ms"]) > DEFAULT_RECHECK_S * 1000:
        r.hsetnx(META, "wanted_ms", now_ms)  # listed since? the next check fetches
    close = difflib.get_close_matches(symbol, r.zrange(KEY, 0, -1), n=3, cutoff=0.75)
    if close:
        return f"{symbol} is not trading on Binance. Close matches: {', '.join(close)}."
    return f"{symbol} is not trading on Binance (spot): check the spelling, e.g. BTCUSDT."


def _rank(symbol):
    """Shortest base first (ETH before ETHFI), then the popular quotes in their order."""
    rank = next((i for i, q in enumerate(POPULAR_QUOTES) if symbol.endswith(q)), None)
    if rank is None:
        return len(symbol), len(POPULAR_QUOTES), symbol
    return len(symbol) - len(POPULAR_QUOTES[rank]), rank, symbol


def suggestions(prefix, limit=MAX_SUGGESTIONS):
    """Listed symbols that start with `prefix`, the likeliest first."""
    prefix = prefix.strip().upper() if isinstance(prefix, str) else ""
    if not (prefix.isascii() and prefix.isalnum()):
        return []
    r = get_redis()
    if not _fresh_list(r.hgetall(META), clock.now_ms())[0]:
        return []
    found = r.zrangebylex(KEY, f"[{prefix}", f"[{prefix}\xff", start=0, num=10 * limit)
    return sorted(found, key=_rank)[:limit]


def store(symbols, now_ms=None):
    """Replace the cached list in one step (a fetch does this; so can a test or an operator)."""
    source = current_app.config["BINANCE_API_URL"]
    with get_redis().pipeline(transaction=True) as pipe:
        pipe.delete(KEY, META)  # META's error and wanted_ms go with the old list
        pipe.zadd(KEY, dict.fromkeys(symbols, 0))
        pipe.hset(META, mapping={"source": source, "fetched_ms": now_ms or clock.now_ms(),
                                 "count": len(symbols)})
        pipe.execute()


def fetch(url, timeout=DEFAULT_TIMEOUT):
    """The symbols exchangeInfo at `url` lists as TRADING, as a set; raises when it cannot."""
    response = requests.get(f"{url.rstrip('/')}/api/v3/exchangeInfo", params=PARAMS,
                            timeout=timeout)
    response.raise_for_status()
    found = {row["symbol"] for row in response.json()["symbols"] if row["status"] == "TRADING"}
    if not found or not all(isinstance(s, str) and s.isascii() and s.isalnum() for s in found):
        raise ValueError("exchangeInfo listed no trading symbols, or garbled ones")
    return found


def refresh(now_ms=None):
    """Fetch the list and cache it; how many symbols, or None when the fetch failed."""
    now_ms = now_ms or clock.now_ms()
    try:
        found = fetch(current_app.config["BINANCE_API_URL"])
    except (requests.RequestException, ValueError, LookupError, TypeError) as exc:
        _failed(exc, now_ms)
        return None
    store(found, now_ms)
    log.info("symbol list: %d trading symbols", len(found))
    return len(found)


def _failed(exc, now_ms):
    """Note the failure; when Binance says slow down (418, 429), wait as long as it asks."""
    log.warning("symbol list: fetch failed (%s); symbols stay as they were", exc)
    r = get_redis()
    r.hset(META, mapping={"error": str(exc)[:300], "error_ms": now_ms})
    response = getattr(exc, "response", None)
    if response is not None and response.status_code in (418, 429):
        wait = response.headers.get("Retry-After", "")
        wait = int(wait) if wait.isdigit() else DEFAULT_BANNED_S
        r.set(HOLD, now_ms, ex=min(max(wait, DEFAULT_HOLD_S), DEFAULT_REFRESH_S))


def refresh_due(now_ms=None):
    """Periodic job: fetch when the list is missing, a day old, or wanted after a miss."""
    if not current_app.config["BINANCE_API_URL"]:
        return None
    now_ms = now_ms or clock.now_ms()
    r = get_redis()
    meta = r.hgetall(META)
    known, _ = _fresh_list(meta, now_ms)
    due = (not known or "wanted_ms" in meta
           or now_ms - int(meta["fetched_ms"]) >= DEFAULT_REFRESH_S * 1000)
    # the hold is taken before fetching: piled-up jobs and other schedulers find it and skip
    if not due or not r.set(HOLD, now_ms, nx=True, ex=DEFAULT_HOLD_S):
        return None
    return refresh(now_ms)
