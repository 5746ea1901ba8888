"""The notification inbox in Redis: 7 days per notification, newest first.

A user's inbox is their replay stream: entry id = notification id = SSE id = cursor. Read
state lives beside it (webapp/inbox/scripts.py), so a new notification is one stream entry.

Every function takes `now_ms` so tests (and callers replaying the past) control the clock.
An entry whose id is older than the TTL is trimmed before any list, count or read.
"""

import json
import re

from redis.commands.core import Script

from webapp import clock, keys
from webapp.core import jsontext, pubsub, scripting
from webapp.exceptions import InvalidInput, NotFound
from webapp.extensions import get_redis
from webapp.inbox import scripts as inbox_lua
from webapp.models import row_id
from webapp.notify.types import PRIORITIES

DEFAULT_TTL_MS = 7 * 24 * 3600 * 1000
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
DEFAULT_SCAN_BUDGET = 1000  # entries one filtered page may examine before it returns
SOURCE_FIELDS = ("alert_id", "strategy_id", "order_id")
TITLE_MAX, MESSAGE_MAX, TYPE_MAX = 200, 2000, 40
EVENT_ID_RE = re.compile(r"\d{1,20}(-\d{1,20})?", re.ASCII)  # SSE/WebSocket replay ids
MAX_ID_PART = 2**64 - 1  # each part of a stream id is an unsigned 64-bit integer
ENTRY_RE = re.compile(r"\d{1,15}-\d{1,9}", re.ASCII)
NID_RE = re.compile(r"(\d{1,15}-\d{1,9})-(\d{1,12})", re.ASCII)  # '<entry id>-<uid>': String(40)

_scripts = {}


def _script(name, client):
    script = _scripts.get(name)
    if script is None:  # the sha is computed once; any client serves as the encoder
        script = _scripts[name] = Script(client, getattr(inbox_lua, name))
    return script


def _run(name, keys, args, redis=None):
    """Run one inbox script; its last argument is the publish command (scripts.py)."""
    client = redis or get_redis()
    return _script(name, client)(keys=keys, args=[*args, pubsub.command(client)], client=client)


def _keys(user_id):
    """The keys every inbox script takes: the stream, the read set, the read mark, the channel."""
    return [*keys.inbox(user_id), keys.user_channel(user_id)]


def cutoff(now_ms):
    return (now_ms or clock.now_ms()) - DEFAULT_TTL_MS


def _entry_json(n, created, checked=False):
    """(user id, the stream entry's JSON) of one notification, defaults filled in; or
    InvalidInput saying what is wrong (_errors: the same checks, one by one). One pass and
    one dict: in a batch of events this runs a thousand times a request. `checked`: the
    events intake checked the fields already, by stricter rules."""
    uid, ntype, title = n.get("user_id"), n.get("type"), n.get("title")
    priority, message = n.get("priority") or "normal", n.get("message") or ""
    data = n.get("data") or {}
    if not checked and (
            isinstance(uid, bool) or not str(uid).isdigit() or not isinstance(ntype, str)
            or not 0 < len(ntype) <= TYPE_MAX or priority not in PRIORITIES
            or not isinstance(title, str) or not 0 < len(title) <= TITLE_MAX
            or not isinstance(message, str) or len(message) > MESSAGE_MAX
            or not isinstance(data, dict)):
        raise InvalidInput(_errors(n))
    uid = int(uid)
    body = {"user_id": uid, "type": ntype, "priority": priority, "title": title,
            "message": message, "created_at": created, "status": "unread",
            "alert_id": str(n.get("alert_id") or ""),
            "strategy_id": str(n.get("strategy_id") or ""),
            "order_id": str(n.get("order_id") or ""), "data": data}  # SOURCE_FIELDS' order
    return uid, jsontext.dumps(body)


def _errors(n):
    """What is wrong with a notification _entry_json refused."""
    errors = {}
    uid = n.get("user_id")
    if isinstance(uid, bool) or not str(uid).isdigit():
        errors["user_id"] = "A user id is required."
    ntype = n.get("type")
    if not isinstance(ntype, str) or not 0 < len(ntype) <= TYPE_MAX:
        errors["type"] = f"A type of at most {TYPE_MAX} characters is required."
    if (n.get("priority") or "normal") not in PRIORITIES:
        errors["priority"] = f"One of {', '.join(PRIORITIES)}."
    title, message = n.get("title"), n.get("message") or ""
    if not isinstance(title, str) or not 0 < len(title) <= TITLE_MAX:
        errors["title"] = f"A title of at most {TITLE_MAX} characters is required."
    if not isinstance(message, str) or len(message) > MESSAGE_MAX:
        errors["message"] = f"At most {MESSAGE_MAX} characters."
    if not isinstance(n.get("data") or {}, dict):
        errors["data"] = "An object."
    return errors


def _store_call(notification, created):
    """(keys, args) of the STORE script for one notification."""
    uid, body = _entry_json(notification, created)
    # the trim follows the real clock: a caller's own clock must never trim what it just wrote
    return _keys(uid), [uid, created, body, cutoff(None), DEFAULT_TTL_MS]


def store(notification, now_ms=None):
    """Write one notification: stream entry, unread, live publish; atomic. -> (nid, event id)."""
    keys, args = _store_call(notification, now_ms or clock.now_ms())
    eid = str(_run("STORE", keys, args))
    return f"{eid}-{args[0]}", eid


def store_many(notifications, now_ms=None, redis=None, route=None, once=None, checked=False):
    """store() for many in one round trip: one atomic call per user, each user's in the
    order given; returns [(nid, event id)] in that order.

    With `once` (a keyed request's tag and its first try's ms), a user whose call ran before
    under that tag gets the entries it made, written nothing again (STORE_MANY_ONCE).

    With `route` (one Redis only), each call also queues its notifications' slow steps:
    route(the user's notifications) gives (queue name, extra keys, extra args) for the
    script (webapp/notify/slowsteps.py in_script); then returns (the results, the names of
    the queues whose kick flag a call set).

    `checked`: the events intake checked every notification already (_entry_json)."""
    created, cut = now_ms or clock.now_ms(), cutoff(None)
    per_user = {}  # uid -> ([positions], [notification JSON])
    for position, notification in enumerate(notifications):
        uid, body = _entry_json(notification, created, checked)
        if uid not in per_user:
            per_user[uid] = [], []
        positions, bodies = per_user[uid]
        positions.append(position)
        bodies.append(body)
    routes = {uid: route([notifications[p] for p in positions]) if route else (None, [], [])
              for uid, (positions, _) in per_user.items()}
    client = redis or get_redis()
    publish = pubsub.command(client)
    calls = [([*_keys(uid), *routes[uid][1]],
              [uid, created, cut, DEFAULT_TTL_MS, *bodies, *routes[uid][2], publish])
             for uid, (_, bodies) in per_user.items()]
    if once:
        calls = [([*call_keys, keys.took(uid)], [*once, *args])
                 for uid, (call_keys, args) in zip(per_user, calls, strict=True)]
    script = _script("STORE_MANY_ONCE" if once else "STORE_MANY", client)
    replies = scripting.run_all(client, script, calls)
    results, kicked = [None] * len(notifications), set()
    for (uid, (positions, _)), reply in zip(per_user.items(), replies, strict=True):
        eids = reply
        if route:
            eids, kick = reply
            if kick:
                kicked.add(routes[uid][0])
        for position, eid in zip(positions, eids, strict=True):
            eid = str(eid)
            results[position] = (f"{eid}-{uid}", eid)
    return (results, kicked) if route else results


def _load(eid, data, status):
    """A stream entry's data JSON (without its id) as the notification dict."""
    n = json.loads(data)
    n.update(id=f"{eid}-{n.get('user_id')}", status=status, user_id=int(n.get("user_id") or 0),
             created_at=int(n.get("created_at") or 0))
    if not isinstance(n.get("data"), dict):
        n["data"] = {}
    return n


def parse_cursor(cursor):
    """A cursor is the id of the last notification of the previous page."""
    # 0-0 names no entry (the first is 0-1) and nothing comes before it
    if not ENTRY_RE.fullmatch(cursor or "") or not any(map(int, cursor.split("-"))):
        raise InvalidInput({"cursor": "Use the cursor a previous page gave (X-Next-Cursor)."})
    return cursor


def list_page(user_id, limit=DEFAULT_PAGE_SIZE, cursor=None, unread=False, ntype=None,
              now_ms=None):
    """(items newest first, next cursor or None); stable while new ones arrive."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput({"limit": f"Between 1 and {MAX_PAGE_SIZE}."})
    after = parse_cursor(cursor) if cursor else ""
    rows, last, more = _run("LIST", _keys(user_id), [
        after, cutoff(now_ms), limit, ntype or "", DEFAULT_SCAN_BUDGET, "1" if unread else ""])
    return [_load(*row) for row in rows], (last if more else None)


def trim(user_id, now_ms=None, ttl_ms=None, redis=None):
    """Drop expired entries (refreshing the keys' TTL if given); -> (removed, unread count).

    With a pipeline as `redis`, the reply comes from its execute().
    """
    return _run("TRIM", _keys(user_id), [cutoff(now_ms), ttl_ms or ""], redis=redis)


def trim_many(user_ids, now_ms=None, ttl_ms=None):
    """trim() for many users in one round trip (one per node on a cluster); -> [(removed,
    unread count), ...] in their order."""
    client = get_redis()
    args = [cutoff(now_ms), ttl_ms or "", pubsub.command(client)]
    return scripting.run_all(client, _script("TRIM", client),
                             [(_keys(user_id), args) for user_id in user_ids])


def unread_count(user_id, now_ms=None, redis=None):
    return int(trim(user_id, now_ms, redis=redis)[1])


def head(user_id, redis=None):
    """(the newest entry id or '0', unread count), read in one script so they agree."""
    _, unread, latest = trim(user_id, redis=redis)
    return latest or "0", int(unread)


def _entry(user_id, nid):
    """The stream entry id of one of the user's notification ids; NotFound if not theirs."""
    match = NID_RE.fullmatch(str(nid))
    if not match or match.group(2) != str(user_id):
        raise NotFound(nid)
    eid = match.group(1)
    ms, _, seq = eid.partition("-")
    if f"{int(ms)}-{int(seq)}" != eid:  # 0170...-01: no id of ours, though Redis reads it as one
        raise NotFound(nid)
    return eid


def get(user_id, nid, now_ms=None, redis=None):
    """One of the user's live notifications; NotFound if missing, expired or not theirs."""
    stream, read, mark = keys.inbox(user_id)
    eid = _entry(user_id, nid)
    if stream_id(eid)[0] <= cutoff(now_ms):
        raise NotFound(nid)
    # not a MULTI: redis-py 8.1 leaves XRANGE's reply unparsed in a cluster's; a read state
    # changing between the three reads shows at the next read
    with (redis or get_redis()).pipeline(transaction=False) as pipe:
        pipe.xrange(stream, eid, eid)
        pipe.zscore(read, eid)
        pipe.hget(mark, "id")
        rows, score, marked = pipe.execute()
    if not rows or "data" not in rows[0][1]:
        raise NotFound(nid)
    unread = score is None and (marked is None or stream_id(eid) > stream_id(marked))
    return _load(eid, rows[0][1]["data"], "unread" if unread else "read")


def stream_id(event_id):
    """'1700000000000-3' -> (1700000000000, 3), for ordering entry ids; (0, 0) if malformed."""
    ms, _, seq = str(event_id).partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return (0, 0)


def find_many(fired):
    """The notifications of (nid, user_id) pairs in one round trip, as stored (status aside);
    those gone or malformed are left out."""
    wanted = []
    for nid, user_id in fired:
        match = NID_RE.fullmatch(str(nid))
        if match and match.group(2) == str(user_id):
            wanted.append((match.group(1), user_id))
    with get_redis().pipeline(transaction=False) as pipe:
        for eid, user_id in wanted:
            pipe.xrange(keys.replay(user_id), eid, eid)
        replies = pipe.execute()
    return [_load(eid, rows[0][1]["data"], "unread")
            for (eid, _), rows in zip(wanted, replies, strict=True)
            if rows and "data" in rows[0][1]]


def titles(user_id, nids):
    """nid -> title (None when gone) for ids of the user's notifications, in one round trip."""
    found = {n["id"]: n.get("title") for n in find_many([(nid, user_id) for nid in nids])}
    return {nid: found.get(str(nid)) for nid in nids}


def between(user_id, start_ms, end_ms, limit):
    """The user's notifications created in [start_ms, end_ms), oldest first, at most limit."""
    found, low, stream = [], "-", keys.replay(user_id)
    while len(found) < limit:
        rows = get_redis().xrange(stream, low, "+", count=500)
        for eid, fields in rows:
            n = _load(eid, fields.get("data") or "{}", "read")
            if start_ms <= n["created_at"] < end_ms:
                found.append(n)
        if len(rows) < 500:
            break
        low = f"({rows[-1][0]}"
    return found[:limit]


def mark_read(user_id, nid, now_ms=None):
    """Mark one read (idempotent); returns (notification, unread count)."""
    eid = _entry(user_id, nid)
    out = _run("MARK_READ", _keys(user_id), [user_id, cutoff(now_ms), eid, DEFAULT_TTL_MS])
    if out[0] == -1:
        raise NotFound(nid)
    return _load(eid, out[1], "read"), int(out[0])


def mark_all_read(user_id, now_ms=None):
    """Mark every live unread notification read; returns how many changed."""
    return int(_run("MARK_ALL_READ", _keys(user_id), [user_id, cutoff(now_ms), DEFAULT_TTL_MS]))


def mark_type_read(user_id, ntype, now_ms=None):
    """Mark the live unread notifications of one type read; returns (how many changed, the
    unread count). A long inbox is gone through in steps (MARK_TYPE_READ)."""
    changed, last = 0, ""
    while True:
        n, last, more, unread = _run("MARK_TYPE_READ", _keys(user_id), [
            user_id, cutoff(now_ms), DEFAULT_TTL_MS, ntype, last, DEFAULT_SCAN_BUDGET])
        changed += int(n)
        if not int(more):
            return changed, int(unread)


def delete(user_id, nid, now_ms=None):
    """Delete one; NotFound if it is missing (already deleted), expired or not theirs."""
    eid = _entry(user_id, nid)
    if not _run("DELETE", _keys(user_id), [user_id, cutoff(now_ms), eid]):
        raise NotFound(nid)


def announce_acked(user_id, nid, by, at_iso):
    """Tell the user's open pages that a notification was acknowledged (from any of them, an
    email's link, the API): the `changed` event that read and delete publish from their
    scripts. Best effort: the acknowledgement is stored whether or not Redis hears this."""
    message = jsontext.dumps({"event": "changed",
                              "data": {"acked": {"id": nid, "by": by, "at": at_iso}}})
    pubsub.publish(get_redis(), keys.user_channel(user_id), message)


def snapshot(user_id, last_event_id, redis=None, now_ms=None):
    """(replay after last_event_id, unread count), read in one atomic step so they agree.

    Replay is [(id, event, notification dict)], oldest first, each with its read state as it
    is now; an id that is no stream id (malformed, out of range) replays nothing.
    """
    start = replay_start(last_event_id)
    unread, rows = _run("REPLAY", _keys(user_id), [cutoff(now_ms), start or ""], redis=redis)
    replay = [(eid, event, _load(eid, data, status)) for eid, event, data, status in rows]
    return replay, int(unread)


def replay_start(last_event_id):
    """The first entry id after last_event_id, or None if it is no stream id or the last one.

    A stream id is `ms` or `ms-seq`, each part an unsigned 64-bit integer (what Redis takes).
    """
    if not last_event_id or not EVENT_ID_RE.fullmatch(last_event_id):
        return None
    ms, seq = stream_id(last_event_id)
    if ms > MAX_ID_PART or seq > MAX_ID_PART:
        return None
    if seq < MAX_ID_PART:
        return f"{ms}-{seq + 1}"
    return f"{ms + 1}-0" if ms < MAX_ID_PART else None


def _num(value):
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def to_api(n):
    """The API's item: the brief's fields for price alerts, plus ours."""
    data = n.get("data") or {}
    return {
        "id": str(n["id"]), "alert_id": row_id(n.get("alert_id")),
        "symbol": data.get("symbol"), "alert_type": data.get("condition"),
        "trigger_price": _num(data.get("target")),
        "current_price": _num(data.get("price", data.get("volume"))),
        "timestamp": clock.ms_to_iso(n["created_at"]), "status": n.get("status", "unread"),
        "type": n.get("type"), "title": n.get("title", ""), "message": n.get("message", ""),
        "priority": n.get("priority", "normal"), "created_at": n["created_at"],
        "strategy_id": n.get("strategy_id") or None, "order_id": n.get("order_id") or None,
        "data": data,
    }


