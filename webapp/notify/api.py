"""POST /api/v1/events: internal systems publish notifications with a service token."""

from flask import Response, abort, g, jsonify, request

from webapp.api.blueprint import bp
from webapp.core import jsontext, metrics
from webapp.notify import intake as events

MAX_KEY = 200


@bp.post("/events")
def post_events():
    key = (request.headers.get("Idempotency-Key") or "").strip()
    if len(key) > MAX_KEY:
        response = jsonify({"error": "invalid_input",
                            "detail": f"Idempotency-Key is at most {MAX_KEY} characters."})
        return response, 422
    # a full batch: more than other routes take. One byte more is read, so a body sent
    # without a length (chunked), which the limit would cut short unsaid, is seen too long
    request.max_content_length = events.MAX_BODY + 1
    raw = request.get_data(cache=False)
    if len(raw) > events.MAX_BODY:
        abort(413)
    status, body = events.handle(raw, f"svc{g.service_token.id}", key)
    metrics.events_intake(status, body)
    # as jsonify wrote it (sorted keys, a newline; text now in UTF-8), at a tenth of its cost
    response = Response(jsontext.dumps(body, sort_keys=True) + b"\n", mimetype="application/json")
    if body.get("replayed"):
        response.headers["Idempotent-Replayed"] = "true"
    if status == 409:
        response.headers["Retry-After"] = "1"
    return response, status
