"""The notification inbox in Redis: 7 days per notification, newest first, and the replay log.

Every function takes `now_ms` so tests (and callers replaying the past) control the clock.
An entry older than the TTL is gone for lists, counts and reads, whatever Redis still holds.
"""

import json
import re
import time
from datetime import UTC, datetime

from redis.commands.core import Script

from webapp import inbox_lua
from webapp.exceptions import InvalidInput, NotFound
from webapp.extensions import get_redis
from webapp.notification_types import PRIORITIES

DEFAULT_TTL_MS = 7 * 24 * 3600 * 1000
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
DEFAULT_SCAN_BUDGET = 1000  # entries one filtered page may examine before it returns
REPLAY_MAXLEN = 5000
SOURCE_FIELDS = ("alert_id", "strategy_id", "order_id")
TITLE_MAX, MESSAGE_MAX, TYPE_MAX = 200, 2000, 40
SEQ_KEY = "tb:seq:notification"
EVENT_ID_RE = re.compile(r"^\d{1,20}(-\d{1,20})?$")
CURSOR_RE = re.compile(r"^(\d{1,20})-(\d{1,20})$")

_scripts = {}


def current_ms():
    return int(time.time() * 1000)


def _run(name, keys, args, redis=None):
    client = redis or get_redis()
    script = _scripts.get(name)
    if script is None:  # the sha is computed once; any client serves as the encoder
        script = _scripts[name] = Script(client, getattr(inbox_lua, name))
    return script(keys=keys, args=args, client=client)


def _keys(user_id):
    return f"tb:inbox:{user_id}", f"tb:unread:{user_id}", f"tb:replay:{user_id}"


def cutoff(now_ms):
    return (now_ms or current_ms()) - DEFAULT_TTL_MS


def _prepared(n):
    """The notification with defaults filled in, or InvalidInput saying what is wrong."""
    errors = {}
    uid = n.get("user_id")
    if isinstance(uid, bool) or not str(uid).isdigit():
        errors["user_id"] = "A user id is required."
    ntype = n.get("type")
    if not isinstance(ntype, str) or not 0 < len(ntype) <= TYPE_MAX:
        errors["type"] = f"A type of at most {TYPE_MAX} characters is required."
    priority = n.get("priority") or "normal"
    if priority not in PRIORITIES:
        errors["priority"] = f"One of {', '.join(PRIORITIES)}."
    title, message = n.get("title"), n.get("message") or ""
    if not isinstance(title, str) or not 0 < len(title) <= TITLE_MAX:
        errors["title"] = f"A title of at most {TITLE_MAX} characters is required."
    if not isinstance(message, str) or len(message) > MESSAGE_MAX:
        errors["message"] = f"At most {MESSAGE_MAX} characters."
    data = n.get("data") or {}
    if not isinstance(data, dict):
        errors["data"] = "An object."
    if errors:
        raise InvalidInput(errors)
    sources = {f: str(n.get(f) or "") for f in SOURCE_FIELDS}
    return {"user_id": int(uid), "type": ntype, "priority": priority, "title": title,
            "message": message, **sources, "data": data}


def _store_call(notification, created):
    """(keys, args) of the STORE script for one notification."""
    n = _prepared(notification)
    uid = n["user_id"]
    body = {"user_id": uid, "type": n["type"], "priority": n["priority"], "title": n["title"],
            "message": n["message"], "created_at": created, "status": "unread",
            **{f: n[f] for f in SOURCE_FIELDS}, "data": n["data"]}
    fields = {**body, "data": json.dumps(n["data"], separators=(",", ":"))}
    flat = [str(x) for pair in fields.items() for x in pair]
    return [SEQ_KEY, *_keys(uid)], [
        uid, created, created + DEFAULT_TTL_MS, json.dumps(body, separators=(",", ":")),
        REPLAY_MAXLEN, DEFAULT_TTL_MS, *flat]


def store(notification, now_ms=None):
    """Write one notification: hash, inbox, unread, replay log and live publish; atomic."""
    keys, args = _store_call(notification, now_ms or current_ms())
    nid, eid = _run("STORE", keys, args)
    return str(nid), str(eid)


def store_many(notifications, now_ms=None, redis=None):
    """store() for many in one round trip (each one atomic); returns [(nid, event_id)]."""
    calls = [_store_call(n, now_ms or current_ms()) for n in notifications]
    with (redis or get_redis()).pipeline(transaction=False) as pipe:
        for keys, args in calls:
            _run("STORE", keys, args, redis=pipe)
        return [(str(nid), str(eid)) for nid, eid in pipe.execute()]


def _load(raw):
    """A stored hash (dict or flat list) as the notification dict."""
    if isinstance(raw, list):
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    n = dict(raw)
    n["user_id"] = int(n.get("user_id") or 0)
    n["created_at"] = int(n.get("created_at") or 0)
    try:
        n["data"] = json.loads(n.get("data") or "{}")
    except ValueError:
        n["data"] = {}
    return n


def parse_cursor(cursor):
    """'<created_at>-<nid>' -> (score, nid); InvalidInput for anything else."""
    match = CURSOR_RE.match(cursor or "")
    if not match:
        raise InvalidInput({"cursor": "Use the next_cursor of a previous page."})
    return match.group(1), match.group(2)


def list_page(user_id, limit=DEFAULT_PAGE_SIZE, cursor=None, unread=False, ntype=None,
              now_ms=None):
    """(items newest first, next cursor or None); stable while new ones arrive."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput({"limit": f"Between 1 and {MAX_PAGE_SIZE}."})
    max_score, after = parse_cursor(cursor) if cursor else ("+inf", "")
    inbox, unread_key, _ = _keys(user_id)
    rows, score, member, more = _run("LIST", [unread_key if unread else inbox, inbox, unread_key],
                                     [max_score, after, cutoff(now_ms), limit, ntype or "",
                                      DEFAULT_SCAN_BUDGET])
    next_cursor = f"{int(float(score))}-{member}" if more else None
    return [_load(row) for row in rows], next_cursor


def unread_count(user_id, now_ms=None, redis=None):
    return (redis or get_redis()).zcount(_keys(user_id)[1], f"({cutoff(now_ms)}", "+inf")


def _nid(nid):
    nid = str(nid)
    if not nid.isdigit() or len(nid) > 20:
        raise NotFound(nid)
    return nid


def get(user_id, nid, now_ms=None):
    """One of the user's live notifications; NotFound if missing, expired or not theirs."""
    raw = get_redis().hgetall(f"tb:n:{_nid(nid)}")
    if not raw or raw.get("user_id") != str(user_id):
        raise NotFound(nid)
    n = _load(raw)
    if n["created_at"] <= cutoff(now_ms):
        raise NotFound(nid)
    return n


def mark_read(user_id, nid, now_ms=None):
    """Mark one read (idempotent); returns (notification, unread count)."""
    nid = _nid(nid)
    out = _run("MARK_READ", [f"tb:n:{nid}", _keys(user_id)[1]], [user_id, cutoff(now_ms), nid])
    if out[0] == -1:
        raise NotFound(nid)
    return _load(out[1:]), int(out[0])


def mark_all_read(user_id, now_ms=None):
    """Mark every live unread notification read; returns how many changed."""
    return int(_run("MARK_ALL_READ", [_keys(user_id)[1]], [user_id, cutoff(now_ms)]))


def delete(user_id, nid, now_ms=None):
    """Delete one; NotFound if it is missing (already deleted), expired or not theirs."""
    nid = _nid(nid)
    inbox, unread_key, _ = _keys(user_id)
    if not _run("DELETE", [f"tb:n:{nid}", inbox, unread_key], [user_id, cutoff(now_ms), nid]):
        raise NotFound(nid)


def snapshot(user_id, last_event_id, redis=None, now_ms=None):
    """(replay after last_event_id, unread count) read in one MULTI, so they agree.

    Replay is [(id, event, data JSON)], oldest first; a missing or malformed id replays nothing.
    """
    replay_key, unread_key = _keys(user_id)[2], _keys(user_id)[1]
    with (redis or get_redis()).pipeline(transaction=True) as pipe:
        valid = bool(last_event_id and EVENT_ID_RE.match(last_event_id))
        if valid:
            pipe.xrange(replay_key, f"({last_event_id}", "+")
        pipe.zcount(unread_key, f"({cutoff(now_ms)}", "+inf")
        replies = pipe.execute()
    rows = replies[0] if valid else []
    replay = [(eid, f.get("event", "notification"), f.get("data", "{}")) for eid, f in rows]
    return replay, int(replies[-1])


def _num(value):
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def to_api(n):
    """The API's item: the brief's fields for price alerts, plus ours."""
    data = n.get("data") or {}
    alert_id = str(n.get("alert_id") or "")
    return {
        "id": str(n["id"]), "alert_id": int(alert_id) if alert_id.isdigit() else None,
        "symbol": data.get("symbol"), "alert_type": data.get("condition"),
        "trigger_price": _num(data.get("target")),
        "current_price": _num(data.get("price", data.get("volume"))),
        "timestamp": iso(n["created_at"]), "status": n.get("status", "unread"),
        "type": n.get("type"), "title": n.get("title", ""), "message": n.get("message", ""),
        "priority": n.get("priority", "normal"), "created_at": n["created_at"],
        "strategy_id": n.get("strategy_id") or None, "order_id": n.get("order_id") or None,
        "data": data,
    }


def iso(ms):
    """Milliseconds since the epoch as ISO 8601 UTC with a Z."""
    stamp = datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")
