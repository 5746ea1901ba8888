"""Notification endpoints of the JSON API, compatible with the brief's contract.

`GET /notifications` answers a bare JSON list (the brief's "200 list"); the page cursor and
the unread count travel in headers (`X-Next-Cursor`, `Link: rel="next"`, `X-Unread-Count`).
"""

from flask import g, jsonify, request, url_for

from webapp.api.blueprint import bp
from webapp.errors import json_error
from webapp.exceptions import InvalidInput, NotFound
from webapp.inbox import service as inbox
from webapp.insist import service as insist
from webapp.notify.types import TYPES

TRUE = {"1", "true", "yes", "on"}
FALSE = {"", "0", "false", "no", "off"}


def _not_found():
    return json_error(404, "not_found", "No such notification.")


def _type(raw):
    """A type filter: one of the registry's (a misspelt one would list nothing, as if none came)."""
    if raw and raw not in TYPES:
        raise InvalidInput({"type": f"One of {', '.join(TYPES)}."})
    return raw or None


def _limit(raw):
    if raw is None or raw == "":
        return inbox.DEFAULT_PAGE_SIZE
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9):  # not "²", nor 5,000 digits
        raise InvalidInput({"limit": f"A whole number from 1 to {inbox.MAX_PAGE_SIZE}."})
    return int(raw)


@bp.get("/notifications")
def list_notifications():
    args = request.args
    unread = args.get("unread", "").lower()
    try:
        if unread not in TRUE | FALSE:
            raise InvalidInput({"unread": "1 for unread notifications only, 0 for all."})
        items, cursor = inbox.list_page(
            g.api_user.id, limit=_limit(args.get("limit")), cursor=args.get("cursor") or None,
            unread=unread in TRUE, ntype=_type(args.get("type")))
    except InvalidInput as exc:
        return json_error(400, "invalid_input", exc.errors)
    response = jsonify([inbox.to_api(n) for n in items])
    response.headers["X-Unread-Count"] = str(inbox.unread_count(g.api_user.id))
    if cursor:
        nxt = url_for("api.list_notifications", **{**args.to_dict(), "cursor": cursor})
        response.headers["X-Next-Cursor"] = cursor
        response.headers["Link"] = f'<{nxt}>; rel="next"'
    return response


@bp.get("/notifications/<nid>")
def get_notification(nid):
    try:
        item = inbox.to_api(inbox.get(g.api_user.id, nid))
    except NotFound:
        return _not_found()
    item["insist"] = insist.to_api(insist.states(g.api_user.id, [nid]).get(nid))
    return jsonify(item)


@bp.patch("/notifications/<nid>/read")
def mark_notification_read(nid):
    try:
        item, count = inbox.mark_read(g.api_user.id, nid)
    except NotFound:
        return _not_found()
    response = jsonify(inbox.to_api(item))
    response.headers["X-Unread-Count"] = str(count)
    return response


@bp.post("/notifications/read-all")
def mark_all_notifications_read():
    changed = inbox.mark_all_read(g.api_user.id)
    return jsonify({"updated": changed, "unread_count": 0})


@bp.delete("/notifications/<nid>")
def delete_notification(nid):
    try:
        inbox.delete(g.api_user.id, nid)
    except NotFound:
        return _not_found()
    return "", 204
