"""Events from internal systems: validate, fan out to channels, route; idempotent by key."""

import hashlib
import json
import math
import re
import time

import orjson
from flask import current_app
from sqlalchemy import bindparam, select

from webapp import keys
from webapp.core import jsontext, text
from webapp.extensions import db, get_redis
from webapp.models import MAX_ID, User
from webapp.notify import idempotency, router
from webapp.notify import types as notification_types
from webapp.preferences import service as preferences

MAX_BATCH = 1000
TITLE_MAX = 200
MESSAGE_MAX = 2000
DATA_MAX = 8 * 1024  # bytes of JSON
REF_MAX = 64
MAX_DIGITS = 100  # in a whole number in the body
# The largest legal event: its text as raw UTF-8 (at most 4 bytes a character), its data and
# the JSON around them. A full batch of such events is the body limit of POST /events, so
# every batch the limits allow fits (text sent as \u escapes takes more room: send fewer).
MAX_EVENT_BYTES = (TITLE_MAX + MESSAGE_MAX) * 4 + DATA_MAX + 1024
MAX_BODY = MAX_BATCH * MAX_EVENT_BYTES  # 18,016,000 bytes, about 17 MiB
FIELDS = {"type", "user_id", "strategy_id", "target", "channel", "title", "message", "priority",
          "data", "order_id", "alert_id"}
REF_FIELDS = ("strategy_id", "order_id", "alert_id")
USER_ID = re.compile(r"[0-9]{1,10}")
# built once: building the statement per request cost more CPU than running it
KNOWN_USERS = select(User.id).where(User.id.in_(bindparam("ids", expanding=True)))
KNOWN_USERS_TTL_S = 60  # how long a process trusts that a user id it saw exists


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
    """The field's text; a title's whitespace collapsed. Checked after that, so "  " is blank."""
    value = item.get(field)
    if value is not None and not isinstance(value, str):
        errors[field] = "Must be a string."
        return ""
    value = value or ""
    if field == "title":
        value = " ".join(value.split())  # so no space is left at either end
    if not value or value.isspace():
        if required:
            errors[field] = "Required."
        return ""
    if len(value) > limit:
        errors[field] = f"At most {limit} characters."
    elif not text.is_text(value):
        errors[field] = ("Plain text only: no control characters (tabs and line breaks are fine) "
                         "and no direction override (U+202D, U+202E).")
    return value


def _user_id(value, errors):
    """An existing-looking user id as int (ASCII digits, in the id range), else None."""
    if type(value) is int and 1 <= value <= MAX_ID:  # the usual id, as the rule below reads it
        return value
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if not USER_ID.fullmatch(text) or not 1 <= int(text) <= MAX_ID:
        errors["user_id"] = "A user id (integer) or \"system\"."
        return None
    return int(text)


def target_of(item, errors):
    """('user', id) | ('strategy', id) | ('system', None) from the item's target fields.

    One of them: with two, which was meant is a guess, and a wrong one reaches users the
    event was not for (a strategy_id beside a user's id is that user's reference, as
    documented; beside anything else it is a target of its own).
    """
    user_id = item.get("user_id")
    if (type(user_id) is int and 1 <= user_id <= MAX_ID and "target" not in item
            and "channel" not in item and "strategy_id" not in item):
        return "user", user_id  # the usual event, as the rules below read it
    named = [name for name in ("target", "channel", "user_id") if item.get(name) not in (None, "")]
    if item.get("strategy_id") and item.get("user_id") in (None, "", "system"):
        named.append("strategy_id")
    if len(named) > 1:
        errors["target"] = (f"Give one target, not {' and '.join(named)}: user_id, "
                            "strategy_id or target.")
        return None
    channel = item.get("target") or item.get("channel")
    if channel is not None and not isinstance(channel, str):
        errors["target"] = "A string: \"system\", \"user:<id>\" or \"strategy:<id>\"."
        return None
    if user_id == "system" or channel == "system":
        return "system", None
    if isinstance(channel, str) and channel.startswith(("user:", "strategy:")):
        kind, _, ident = channel.partition(":")
        return (kind, ident) if kind == "strategy" else target_of({"user_id": ident}, errors)
    if user_id not in (None, ""):
        uid = _user_id(user_id, errors)
        return ("user", uid) if uid is not None else None
    if item.get("strategy_id"):
        return "strategy", str(item["strategy_id"])
    errors["target"] = "Give user_id, strategy_id or \"system\" as the target."
    return None


def _data(item, errors, from_json=False):
    data = item.get("data")
    if data is None:
        return {}
    if not isinstance(data, dict):
        errors["data"] = "Must be a JSON object."
        return {}
    if from_json and _surely_small(data):
        return data
    try:
        size = len(json.dumps(data, allow_nan=False))
    except (TypeError, ValueError):  # from Python callers: NaN, Infinity or no JSON at all
        errors["data"] = "Must be a JSON object without NaN or Infinity."
        return {}
    if size > DATA_MAX:
        errors["data"] = f"At most {DATA_MAX} bytes of JSON."
    return data


def _surely_small(data):
    """Whether data read from JSON text (so without NaN or Infinity) is within DATA_MAX, told
    from orjson's compact form at a tenth of the cost: json.dumps writes no byte of it as
    more than 6 characters (a \\u escape; ", " for ","). Near the limit, the count decides."""
    try:
        return len(orjson.dumps(data)) * 6 <= DATA_MAX
    except TypeError:  # what orjson cannot write (integers beyond 64 bits)
        return False


def _refs(item, errors):
    """Source references as text: strings or integers only, cut to REF_MAX."""
    if "order_id" not in item and "alert_id" not in item and "strategy_id" not in item:
        return {"strategy_id": "", "order_id": "", "alert_id": ""}  # most events name none
    refs = {}
    for field in REF_FIELDS:
        value = item.get(field)
        if value is None:  # most events name one reference at most
            refs[field] = ""
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            errors[field] = "A string or integer."
        refs[field] = str(value or "")[:REF_MAX] if field not in errors else ""
    return refs


def _type_and_priority(item, errors):
    kind, priority = item.get("type"), item.get("priority")
    if not isinstance(kind, str) or kind not in notification_types.TYPES:
        errors["type"] = f"Unknown type; one of {', '.join(notification_types.TYPES)}."
    if priority in (None, ""):  # the type's default, as when left out
        known = notification_types.TYPES.get(kind) if isinstance(kind, str) else None
        priority = known.default_priority if known else None
    elif not isinstance(priority, str) or priority not in notification_types.PRIORITIES:
        errors["priority"] = f"One of {', '.join(notification_types.PRIORITIES)}."
    return kind, priority


def validate(item, from_json=False):
    """(target, notification without user_id, errors) for one raw event; `from_json` when it
    was read from JSON text (so it holds nothing JSON cannot, such as NaN). Without errors,
    the notification has every field the inbox stores, checked and filled in (the type's
    default priority, empty references), so the router takes it as it is."""
    if not isinstance(item, dict):
        return None, None, {"event": "Must be a JSON object."}
    errors = {} if FIELDS.issuperset(item) else {f: "Unknown field." for f in item
                                                 if f not in FIELDS}
    kind, priority = _type_and_priority(item, errors)
    title = _text(item, "title", TITLE_MAX, errors)
    message = _text(item, "message", MESSAGE_MAX, errors, required=False)
    data = _data(item, errors, from_json)
    refs = _refs(item, errors)
    target = target_of(item, errors)
    if target and target[0] == "strategy":
        if not preferences.STRATEGY_ID.match(target[1]):
            errors["strategy_id"] = "Use 1-64 letters, digits, '.', '_', ':' or '-'."
        refs["strategy_id"] = target[1]
    notification = {"type": kind, "title": title, "message": message, "priority": priority,
                    "data": data, **refs}
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


def known_users(ids):
    """Those of the user ids that exist. Ids seen to exist are remembered per process for
    KNOWN_USERS_TTL_S (the app deletes no user; one deleted by hand in SQL is refused after
    that at most). The rest are read on a connection of its own, handed back at once: a
    request holding one through its Redis writes made the pool open and close connections
    under concurrency."""
    if not ids:
        return set()
    memory = _remembered_users()
    missing = ids - memory
    if missing:
        with db.engine.connect() as connection:
            memory.update(connection.scalars(KNOWN_USERS, {"ids": sorted(missing)}))
    return ids & memory


def _remembered_users():
    """The process's set of user ids known to exist, emptied every KNOWN_USERS_TTL_S."""
    since, memory = current_app.extensions.get("known_users") or (0.0, set())
    if time.monotonic() - since > KNOWN_USERS_TTL_S:
        since, memory = time.monotonic(), set()
        current_app.extensions["known_users"] = since, memory
    return memory


def publish(raw_items, source="events", from_json=False, once=None):
    """Validate every event, route the good ones, and report per item. `once`: a keyed
    request's (tag, first try's ms) (route_many)."""
    checked = [validate(item, from_json) for item in raw_items]
    known = known_users({t[1] for t, _, e in checked if t and t[0] == "user" and not e})
    cache = {}
    results, outgoing = [], []
    for index, (target, notification, errors) in enumerate(checked):
        users = None if errors else recipients(target, known, cache)
        if users is None:
            errors = errors or {"user_id": "No such user."}
            results.append({"index": index, "status": "rejected", "errors": errors})
            continue
        results.append({"index": index, "status": "accepted", "ids": []})
        if target[0] == "user":  # one recipient: the notification is its own, no copy
            notification["user_id"] = users[0]
            outgoing.append((index, notification))
        else:
            outgoing += [(index, {**notification, "user_id": uid}) for uid in users]
    routed = (router.route_many([n for _, n in outgoing], source=source, once=once,
                                checked=True) if outgoing else [])
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
    """Parse and publish a request body; with an Idempotency-Key, once per key for 24 h.

    A retry is the same request when its parsed content is the same (keys in any order,
    any spacing), so the key is checked against a digest of the content, not the bytes.
    """
    items, digest = parse(raw, digest=bool(key))
    if not key:
        return _publish(items)
    return idempotency.once(get_redis(), keys.idempotency(scope, key), digest,
                            lambda tagged: _publish(items, tagged))


def _no_constant(name):
    raise ValueError(f"{name} is not valid JSON; send numbers only.")


def _finite(text):
    number = float(text)
    if not math.isfinite(number):  # 1e999 parses as Infinity, which JSON cannot carry back
        raise ValueError(f"{text} is too large a number.")
    return number


def _integer(text):
    if len(text) > MAX_DIGITS:  # Python's own refusal (4,300 digits) names its internals
        raise ValueError(f"A number of at most {MAX_DIGITS} digits, not {len(text)}.")
    return int(text)


def parse(raw, digest=True):
    """(the event list, or the 422 to answer; a digest of the content for idempotency, or
    None when not asked for: sorting a batch's keys costs more than reading it)."""
    # orjson first; what it refuses or may misread gets the standard library's answer
    body = jsontext.fast_loads(raw)
    if body is None:
        return _parse_exactly(raw)
    try:
        items = items_of(body)
    except ValueError as exc:
        return _invalid(str(exc), raw)
    if not digest:
        return items, None
    # canonical form: the digest ignores key order and spacing
    return items, hashlib.sha256(jsontext.dumps(body, sort_keys=True)).hexdigest()


def _parse_exactly(raw):
    """parse() by the standard library: the rules' own messages for a body that fails."""
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite,
                          parse_int=_integer)
        # any lone UTF-16 surrogate ("\udc00"), which JSON lets through but no store can
        # hold, fails the encoding here
        canonical = jsontext.dumps(body, sort_keys=True)
        return items_of(body), hashlib.sha256(canonical).hexdigest()
    except UnicodeEncodeError:
        message = "Text must be valid Unicode: a lone UTF-16 surrogate is not a character."
    except UnicodeDecodeError:
        message = "Send JSON encoded as UTF-8."
    except json.JSONDecodeError:
        message = "Send valid JSON."
    except RecursionError:
        message = "The JSON is nested too deeply."
    except ValueError as exc:
        message = str(exc) or "Send valid JSON."
    return _invalid(message, raw)


def _invalid(message, raw):
    return (422, {"error": "invalid_input", "detail": message}), hashlib.sha256(raw).hexdigest()


def _publish(items, once=None):
    if isinstance(items, tuple):  # the 422 parse() made
        return items
    return summary(publish(items, from_json=True, once=once))
