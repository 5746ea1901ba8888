"""POST /api/v1/notifications/<nid>/ack: acknowledge a notification that insists."""

from flask import g, jsonify

from webapp.accounts import service as accounts
from webapp.api.blueprint import bp
from webapp.errors import json_error
from webapp.exceptions import NotFound
from webapp.insist import service


def _caller():
    """Who acknowledges: the API key by its name, else the signed-in user."""
    secret = accounts.presented_secret("X-API-Key")
    key = accounts.live_api_key(secret) if secret else None
    if key is not None:
        return f"API key '{key.name}'"
    return f"{g.api_user.email} on the web"


@bp.post("/notifications/<nid>/ack")
def acknowledge_notification(nid):
    try:
        esc = service.ack(g.api_user.id, nid, _caller())
    except NotFound:
        return json_error(404, "not_found", "No such notification.")
    except service.NotInsisting as exc:
        return json_error(409, "not_insisting", str(exc))
    return jsonify({"id": esc.notification_id, "acknowledged_at": service.iso(esc.acked_at),
                    "acknowledged_by": esc.acked_by, "rounds": esc.rounds})
