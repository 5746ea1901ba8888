"""Destination endpoints of the JSON API."""

from flask import g, jsonify

from webapp.alerts.api import json_body
from webapp.api.blueprint import bp
from webapp.destinations import service as destinations
from webapp.errors import json_error
from webapp.exceptions import InvalidInput, NotFound


def _missing():
    return json_error(404, "not_found", "No such destination.")


def _invalid(exc):
    return json_error(422, "invalid_input", exc.errors)


@bp.get("/destinations")
def list_destinations():
    return jsonify([destinations.to_json(d)
                    for d in destinations.list_destinations(g.api_user.id)])


@bp.post("/destinations")
def create_destination():
    """Created; a generated webhook secret is in this answer and never again."""
    try:
        dest, secret = destinations.create(g.api_user.id, json_body())
    except InvalidInput as exc:
        return _invalid(exc)
    return jsonify(destinations.to_json(dest, secret)), 201


@bp.patch("/destinations/<int:dest_id>")
def update_destination(dest_id):
    try:
        dest = destinations.update(g.api_user.id, dest_id, json_body())
    except NotFound:
        return _missing()
    except InvalidInput as exc:
        return _invalid(exc)
    return jsonify(destinations.to_json(dest))


@bp.delete("/destinations/<int:dest_id>")
def delete_destination(dest_id):
    try:
        destinations.delete(g.api_user.id, dest_id)
    except NotFound:
        return _missing()
    return "", 204


@bp.post("/destinations/<int:dest_id>/test")
def test_destination(dest_id):
    """Send a test message now; 200 with ok true or false and what the receiver said."""
    try:
        ok, detail = destinations.send_test(g.api_user, dest_id)
    except NotFound:
        return _missing()
    except destinations.TestsThrottled as exc:
        response = json_error(429, "too_many_requests", str(exc))
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    return jsonify({"ok": ok, "detail": detail,
                    "destination": destinations.to_json(destinations.get(g.api_user.id,
                                                                         dest_id))})
