"""Events from internal systems: validate, fan out to channels, route; idempotent by key."""

import hashlib
import json

from sqlalchemy import select

from webapp import notification_types, preferences, router
from webapp.extensions import db, get_redis
from webapp.models import User

MAX_BATCH = 1000
TITLE_MAX = 200
MESSAGE_MAX = 2000
DATA_MAX = 8 * 1024  # bytes of JSON
REF_MAX = 64
IDEMPOTENCY_TTL = 24 * 3600
PENDING_TTL = 120  # a crashed request frees its key after this
FIELDS = {"type", "user_id", "strategy_id", "target", "channel", "title", "message", "priority",
          "data", "order_id", "alert_id"}


def items_of(body):
    """The list of event objects in a body: one object, a list, or {"events": [...]}."""
    if isinstance(body, dict) and isinstance(body.get("events"), list):
        body = body["events"]
    if isinstance(body, dict):
        return [body]
    if not isinstance(body, list) or not body:
        raise ValueError("Send an event object, a list of them or {\"events\": [...]}.")
    if len(body) > MAX_BATCH:
        raise ValueError(f"A batch holds at most {MAX_BATCH} events; this one has {len(body)}.")
    return body


def _text(item, field, limit, errors, required=True):
    value = item.get(field)
    if value is None or value == "":
        if required:
            errors[field] = "Required."
        return ""
    if not isinstance(value, str):
        errors[field] = "Must be a string."
    elif len(value) > limit:
        errors[field] = f"At most {limit} characters."
    return value if isinstance(value, str) else ""


def target_of(item, errors):
    """('user', id) | ('strategy', id) | ('system', None) from the item's target fields."""
    channel = item.get("target") or item.get("channel")
    user_id = item.get("user_id")
    if user_id == "system" or channel == "system":
        return "system", None
    if isinstance(channel, str) and channel.startswith(("user:", "strategy:")):
        kind, _, ident = channel.partition(":")
        return (kind, ident) if kind == "strategy" else target_of({"user_id": ident}, errors)
    if user_id not in (None, ""):
        if isinstance(user_id, bool) or not str(user_id).isdigit():
            errors["user_id"] = "A user id (integer) or \"system\"."
            return None
        return "user", int(user_id)
    if item.get("strategy_id"):
        return "strategy", str(item["strategy_id"])
    errors["target"] = "Give user_id, strategy_id or \"system\" as the target."
    return None


def validate(item):
    """(target, notification without user_id, errors) for one raw event."""
    if not isinstance(item, dict):
        return None, None, {"event": "Must be a JSON object."}
    errors = {f: "Unknown field." for f in item if f not in FIELDS}
    kind = item.get("type")
    if notification_types.get(kind) is None:
        errors["type"] = f"Unknown type; one of {', '.join(notification_types.TYPES)}."
    title = _text(item, "title", TITLE_MAX, errors)
    message = _text(item, "message", MESSAGE_MAX, errors, required=False)
    priority = item.get("priority") or None
    if priority is not None and priority not in notification_types.PRIORITIES:
        errors["priority"] = f"One of {', '.join(notification_types.PRIORITIES)}."
    data = item.get("data") or {}
    if not isinstance(data, dict):
        errors["data"] = "Must be a JSON object."
    elif len(json.dumps(data)) > DATA_MAX:
        errors["data"] = f"At most {DATA_MAX} bytes of JSON."
    refs = {f: str(item.get(f) or "")[:REF_MAX] for f in ("strategy_id", "order_id", "alert_id")}
    target = target_of(item, errors)
    if target and target[0] == "strategy":
        if not preferences.STRATEGY_ID.match(target[1]):
            errors["strategy_id"] = "Use 1-64 letters, digits, '.', '_', ':' or '-'."
        refs["strategy_id"] = target[1]
    notification = {"type": kind, "title": " ".join(title.split()), "message": message,
                    "priority": priority, "data": data, **refs}
    return target, notification, errors


def recipients(target, known_users, cache):
    """User ids for a target; None for an unknown user. `cache` spares repeated queries."""
    kind, ident = target
    if kind == "user":
        return [ident] if ident in known_users else None
    if target not in cache:
        cache[target] = (preferences.followers(ident) if kind == "strategy" else
                         db.session.scalars(select(User.id).order_by(User.id)).all())
    return cache[target]


def publish(raw_items):
    """Validate every event, route the good ones, and report per item."""
    checked = [validate(item) for item in raw_items]
    wanted = {t[1] for t, _, e in checked if t and t[0] == "user" and not e}
    known = set(db.session.scalars(select(User.id).where(User.id.in_(wanted))).all())
    cache = {}
    results, outgoing = [], []
    for index, (target, notification, errors) in enumerate(checked):
        users = None if errors else recipients(target, known, cache)
        if users is None:
            errors = errors or {"user_id": "No such user."}
            results.append({"index": index, "status": "rejected", "errors": errors})
            continue
        results.append({"index": index, "status": "accepted", "ids": []})
        outgoing += [(index, {**notification, "user_id": uid}) for uid in users]
    routed = router.route_many([n for _, n in outgoing]) if outgoing else []
    for (index, _), (nid, _) in zip(outgoing, routed, strict=True):
        results[index]["ids"].append(nid)
    return results


def summary(results):
    """(status, body): 202 if every event was accepted, else 422 saying which went through."""
    accepted = [r for r in results if r["status"] == "accepted"]
    ids = [nid for r in accepted for nid in r["ids"]]
    body = {"accepted": len(accepted), "rejected": len(results) - len(accepted), "ids": ids,
            "results": results}
    if len(accepted) == len(results):
        return 202, body
    body["error"] = "invalid_events"
    body["detail"] = (f"{body['rejected']} of {len(results)} events were rejected (see results); "
                      f"the other {len(accepted)} were accepted and will not need resending.")
    return 422, body


def handle(raw, scope, key=None):
    """Parse and publish a request body; with an Idempotency-Key, once per key for 24 h."""
    if not key:
        return _handle(raw)
    r = get_redis()
    digest = hashlib.sha256(raw).hexdigest()
    store = f"tb:idem:{scope}:{hashlib.sha256(key.encode()).hexdigest()}"
    if not r.set(store, json.dumps({"state": "pending", "hash": digest}), nx=True,
                 ex=PENDING_TTL):
        return _replay(r.get(store), digest)
    try:
        status, body = _handle(raw)
    except BaseException:
        r.delete(store)
        raise
    r.set(store, json.dumps({"state": "done", "hash": digest, "status": status, "body": body}),
          ex=IDEMPOTENCY_TTL)
    return status, body


def _replay(saved, digest):
    saved = json.loads(saved or '{"state": "pending"}')
    if saved.get("hash") != digest:
        return 422, {"error": "idempotency_key_reused",
                     "detail": "This Idempotency-Key was used with a different body."}
    if saved["state"] == "pending":
        return 409, {"error": "conflict",
                     "detail": "A request with this Idempotency-Key is still in progress."}
    return saved["status"], {**saved["body"], "replayed": True}


def _handle(raw):
    try:
        items = items_of(json.loads(raw))
    except (ValueError, RecursionError) as exc:
        message = str(exc) if not isinstance(exc, json.JSONDecodeError) else "Send valid JSON."
        return 422, {"error": "invalid_input", "detail": message}
    return summary(publish(items))
