"""GET /api/v1/audit: the caller's critical notifications (the audit trail)."""

from flask import g, jsonify, request

from webapp import audit
from webapp.api.routes import bp
from webapp.errors import json_error


@bp.get("/audit")
def list_audit():
    try:
        limit = int(request.args.get("limit", audit.DEFAULT_PAGE))
        before = request.args.get("before")
        before = int(before) if before else None
    except ValueError:
        return json_error(422, "invalid_input", {"limit": "Integers only.", "before": "ms."})
    rows, cursor = audit.page(g.api_user.id, limit, before)
    return jsonify({"items": [audit.as_dict(r) for r in rows], "next_before": cursor})
