"""An `Idempotency-Key` of POST /api/v1/events: claimed while its request runs, then holding
the request's answer for 24 h.

A request that fails (Redis down, a master failing over) may have written some users' part
of the batch. Its claim is then marked failed, keeping its tag and its created ms, and a
retry with the same content takes the claim over: it publishes under the same tag, so each
user's part is written once (inbox STORE_MANY_ONCE), and gets the ids the first try made.
"""

import json
import threading
import time
import uuid

from webapp import clock
from webapp.core import jsontext
from webapp.core.outage import REDIS_DOWN

TTL = 24 * 3600
PENDING_TTL = 120  # a request killed mid-way frees its key after this
RETRY_S = (0.25, 5.0)  # a failure's mark that Redis refused is tried again: first wait, longest

# KEYS: 1 the key's record  ARGV: 1 the record expected  2 the record to put  3 its TTL (s)
# Only the request's own claim is replaced: once expired, another may have claimed the key.
SWAP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"""


def once(r, store, digest, publish):
    """publish(tag, created ms) -> (status, body), once per key: a retry with the same
    content (digest) gets the first answer, or takes over a first try that failed; one while
    the first runs gets 409; other content, 422."""
    claim = {"state": "pending", "hash": digest, "tag": uuid.uuid4().hex,
             "created": clock.now_ms()}
    pending = json.dumps(claim)
    if not r.set(store, pending, nx=True, ex=PENDING_TTL):
        saved = r.get(store)
        claim = _take_over(r, store, saved, digest)
        if claim is None:
            return _replay(saved, digest)
        pending = json.dumps(claim)
    try:
        status, body = publish(claim["tag"], claim["created"])
    except BaseException:
        failed(r, store, pending, json.dumps({**claim, "state": "failed"}))
        raise
    r.set(store, jsontext.dumps({"state": "done", "hash": digest, "status": status, "body": body}),
          ex=TTL)
    return status, body


def _take_over(r, store, saved, digest):
    """The failed try's claim, now this request's; None if there is none to take."""
    try:
        claim = json.loads(saved or "{}")
    except ValueError:
        return None
    if claim.get("state") != "failed" or claim.get("hash") != digest:
        return None
    claim["state"] = "pending"
    return claim if _swap(r, store, saved, json.dumps(claim), PENDING_TTL) else None


def failed(r, store, pending, mark):
    """Mark a failed request's claim, so its retry takes it over at once. When Redis refuses
    that too (the likely cause of the failure), it is tried again from a thread of its own
    until done or the claim has expired: else every retry would get 409 for PENDING_TTL."""
    try:
        _swap(r, store, pending, mark, TTL)
    except REDIS_DOWN:
        threading.Thread(target=_mark_later, args=(r, store, pending, mark),
                         name="idempotency-failed", daemon=True).start()


def _mark_later(r, store, pending, mark):
    deadline, wait_s = time.monotonic() + PENDING_TTL, RETRY_S[0]
    while time.monotonic() + wait_s < deadline:
        time.sleep(wait_s)
        try:
            _swap(r, store, pending, mark, TTL)
            return
        except REDIS_DOWN:
            wait_s = min(wait_s * 2, RETRY_S[1])


def _swap(r, store, expected, new, ttl):
    return r.register_script(SWAP)(keys=[store], args=[expected, new, ttl]) == 1


def _replay(saved, digest):
    saved = json.loads(saved or '{"state": "pending"}')
    if saved.get("hash") != digest:
        return 422, {"error": "idempotency_key_reused",
                     "detail": "This Idempotency-Key was used with a different body."}
    if saved["state"] in ("pending", "failed"):  # failed: another retry took it over first
        return 409, {"error": "conflict",
                     "detail": "A request with this Idempotency-Key is still in progress."}
    return saved["status"], {**saved["body"], "replayed": True}
