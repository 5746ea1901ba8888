"""GET /api/v1/audit: the caller's critical notifications (the audit trail)."""

from flask import g, jsonify, request

from webapp.api.blueprint import bp
from webapp.delivery import audit
from webapp.errors import json_error
from webapp.exceptions import InvalidInput


@bp.get("/audit")
def list_audit():
    try:
        before = audit.parse_before(request.args.get("before"))
    except InvalidInput as exc:
        return json_error(422, "invalid_input", exc.errors)
    raw = request.args.get("limit") or str(audit.DEFAULT_PAGE)
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9):  # not "٥", nor 5,000 digits
        return json_error(422, "invalid_input", {"limit": f"From 1 to {audit.MAX_PAGE}."})
    limit = int(raw)
    if not 1 <= limit <= audit.MAX_PAGE:
        return json_error(422, "invalid_input", {"limit": f"From 1 to {audit.MAX_PAGE}."})
    rows, cursor = audit.page(g.api_user.id, limit, before)
    return jsonify({"items": [audit.as_dict(r) for r in rows], "next_before": cursor})
