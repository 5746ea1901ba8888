"""An `Idempotency-Key` of POST /api/v1/events: claimed while its request runs, then holding
the request's answer for 24 h.

A request that fails (Redis down, a master failing over) may have written some users' part
of the batch. Its claim is then marked failed, keeping its tag and the time it was made, and
a retry with the same content takes the claim over: it publishes under the same tag, so each
user's part is written once (inbox STORE_MANY_ONCE), and answers the ids the first try made.
A failed claim still reads as pending (409) to code from before it was kept.
"""

import json
import random
import threading
import time
import uuid

import redis

from webapp import clock
from webapp.core import jsontext
from webapp.core.outage import REDIS_DOWN

TTL = 24 * 3600
PENDING_TTL = 120  # a request killed mid-way frees its key after this
RETRY_S = (0.25, 5.0)  # a failure's mark that Redis refused is tried again: first wait, longest

# KEYS: 1 the key's record  ARGV: 1 the record expected  2 the record to put  3 when it
# expires (ms since the epoch). Only the request's own claim is replaced: once expired,
# another request may have claimed the key.
SWAP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
return 1
"""


def once(r, store, digest, publish):
    """publish((tag, created ms)) -> (status, body), once per key: a retry with the same
    content (digest) gets the first answer, or takes over a first try that failed; one while
    the first runs gets 409; other content, 422."""
    claim = {"state": "pending", "hash": digest, "tag": uuid.uuid4().hex,
             "created": clock.now_ms()}
    pending = json.dumps(claim)
    try:
        claimed = r.set(store, pending, nx=True, ex=PENDING_TTL)
    except redis.TimeoutError:
        # sent to a Redis that runs it once it answers again (frozen, or the reply lost):
        # marked failed when it lands, else every retry would get 409 for PENDING_TTL
        failed(r, store, pending, json.dumps({**claim, "failed": True}),
               claim["created"] + TTL * 1000, outage=True, landing=True)
        raise
    if not claimed:
        saved = r.get(store)
        claim = _take_over(r, store, saved, digest)
        if claim is None:
            return _replay(saved, digest)
        pending = json.dumps(claim)
    # the key and the users' records (tb:took) last a day from the claim, whatever retries
    ends_ms = claim["created"] + TTL * 1000
    try:
        status, body = publish((claim["tag"], claim["created"]))
        done = jsontext.dumps({"state": "done", "hash": digest, "status": status, "body": body})
        _swap(r, store, pending, done, ends_ms)
    except BaseException as exc:
        failed(r, store, pending, json.dumps({**claim, "failed": True}), ends_ms,
               outage=isinstance(exc, REDIS_DOWN))
        raise
    return status, body


def _take_over(r, store, saved, digest):
    """The failed try's claim, now this request's; None if there is none to take."""
    try:
        claim = json.loads(saved or "{}")
    except ValueError:
        return None
    if not (claim.get("failed") and claim.get("hash") == digest
            and isinstance(claim.get("tag"), str) and isinstance(claim.get("created"), int)):
        return None
    del claim["failed"]
    ends_ms = min(clock.now_ms() + PENDING_TTL * 1000, claim["created"] + TTL * 1000)
    return claim if _swap(r, store, saved, json.dumps(claim), ends_ms) else None


def failed(r, store, pending, mark, ends_ms, outage=False, landing=False):
    """Mark a failed request's claim, so its retry takes it over at once. While Redis refuses
    (`outage`: it did already), it is tried again from a thread of its own until done or the
    claim has expired: else every retry would get 409 for PENDING_TTL. `landing`: the claim
    itself may not be there yet (its SET went unanswered), so it is looked for until then."""
    if not outage:
        try:
            _swap(r, store, pending, mark, ends_ms)
            return
        except redis.RedisError:
            pass
    threading.Thread(target=_mark_later, args=(r, store, pending, mark, ends_ms, landing),
                     name="idempotency-failed", daemon=True).start()


def _mark_later(r, store, pending, mark, ends_ms, landing=False):
    deadline, wait_s = time.monotonic() + PENDING_TTL, RETRY_S[0]
    while time.monotonic() + wait_s < deadline:
        time.sleep(wait_s * random.uniform(0.5, 1.5))  # a burst of failures spreads out
        try:
            if _swap(r, store, pending, mark, ends_ms) or not landing:
                return
        except redis.RedisError:
            pass
        wait_s = min(wait_s * 2, RETRY_S[1])


def _swap(r, store, expected, new, ends_ms):
    return r.register_script(SWAP)(keys=[store], args=[expected, new, ends_ms]) == 1


def _replay(saved, digest):
    saved = json.loads(saved or '{"state": "pending"}')
    if saved["state"] == "pending" and "hash" not in saved:  # expired since: try again
        saved["hash"] = digest
    if saved.get("hash") != digest:
        return 422, {"error": "idempotency_key_reused",
                     "detail": "This Idempotency-Key was used with a different body."}
    if saved["state"] == "pending":  # or failed, and another retry took it over first
        return 409, {"error": "conflict",
                     "detail": "A request with this Idempotency-Key is still in progress."}
    return saved["status"], {**saved["body"], "replayed": True}
