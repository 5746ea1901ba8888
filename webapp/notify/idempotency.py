"""An `Idempotency-Key` of POST /api/v1/events: claimed while its request runs, then holding
the request's answer for 24 h; a request that fails frees it for the client's retry."""

import json
import threading
import time
import uuid

from webapp.core import jsontext
from webapp.core.outage import REDIS_DOWN

TTL = 24 * 3600
PENDING_TTL = 120  # a request killed mid-way frees its key after this
RELEASE_RETRY_S = (0.25, 5.0)  # a release that failed is tried again: first wait, longest

# KEYS: 1 the key's record  ARGV: 1 the pending record of the request that failed
# Only that record goes: once it has expired, a retry may have claimed the key.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def once(r, store, digest, publish):
    """publish() -> (status, body), run once per key: a retry with the same content (digest)
    gets the first answer; one while the first runs, 409; other content, 422."""
    pending = json.dumps({"state": "pending", "hash": digest, "request": uuid.uuid4().hex})
    if not r.set(store, pending, nx=True, ex=PENDING_TTL):
        return _replay(r.get(store), digest)
    try:
        status, body = publish()
    except BaseException:
        release(r, store, pending)
        raise
    r.set(store, jsontext.dumps({"state": "done", "hash": digest, "status": status, "body": body}),
          ex=TTL)
    return status, body


def release(r, store, pending):
    """Free a failed request's key. When Redis fails too (an outage, a failover: the likely
    cause of the failure), the release is tried again from a thread of its own until it is
    done or the record has expired; else every retry would get 409 for PENDING_TTL."""
    try:
        r.register_script(RELEASE)(keys=[store], args=[pending])
    except REDIS_DOWN:
        threading.Thread(target=_release_later, args=(r, store, pending),
                         name="idempotency-release", daemon=True).start()


def _release_later(r, store, pending):
    deadline, wait_s = time.monotonic() + PENDING_TTL, RELEASE_RETRY_S[0]
    while time.monotonic() + wait_s < deadline:
        time.sleep(wait_s)
        try:
            r.register_script(RELEASE)(keys=[store], args=[pending])
            return
        except REDIS_DOWN:
            wait_s = min(wait_s * 2, RELEASE_RETRY_S[1])


def _replay(saved, digest):
    saved = json.loads(saved or '{"state": "pending"}')
    if saved.get("hash") != digest:
        return 422, {"error": "idempotency_key_reused",
                     "detail": "This Idempotency-Key was used with a different body."}
    if saved["state"] == "pending":
        return 409, {"error": "conflict",
                     "detail": "A request with this Idempotency-Key is still in progress."}
    return saved["status"], {**saved["body"], "replayed": True}
