"""Alert endpoints of the JSON API, compatible with the brief's contract."""

import json

from flask import abort, g, jsonify, request

from webapp.alerts import readings
from webapp.alerts import service as alerts
from webapp.api.blueprint import bp
from webapp.errors import json_error
from webapp.exceptions import InvalidInput, NotFound

MAX_BODY = 16 * 1024  # an alert is a few hundred bytes; anything near this is not one


def _invalid(errors):
    return json_error(422, "invalid_input", errors)


def json_body():
    """The request's JSON object, or InvalidInput for anything else (bad, not an object); a
    body over MAX_BODY is 413, as the README says."""
    if (request.content_length or 0) > MAX_BODY:
        abort(413)
    raw = request.stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        abort(413)
    try:
        data = json.loads(raw)
    except RecursionError:
        raise InvalidInput({"body": "The JSON is nested too deeply."}) from None
    except ValueError:
        raise InvalidInput({"body": "Send a JSON object."}) from None
    if not isinstance(data, dict):
        raise InvalidInput({"body": "Send a JSON object."})
    return data


@bp.post("/alerts")
def create_alert():
    try:
        alert = alerts.create_alert(g.api_user.id, json_body())
    except InvalidInput as exc:
        return _invalid(exc.errors)
    return jsonify(alerts.to_json(alert)), 201


@bp.get("/alerts")
def list_alerts():
    rows = alerts.list_alerts(g.api_user.id)
    shown = readings.looked_up(rows)
    return jsonify([alerts.to_json(a, shown["checks"].get(a.symbol),
                                   shown["readings"].get(a.id, {})) for a in rows])


@bp.patch("/alerts/<int:alert_id>")
def update_alert(alert_id):
    try:
        alert = alerts.update_alert(g.api_user.id, alert_id, json_body())
    except NotFound:
        return json_error(404, "not_found", "No such alert.")
    except InvalidInput as exc:
        return _invalid(exc.errors)
    return jsonify(alerts.to_json(alert))


@bp.delete("/alerts/<int:alert_id>")
def delete_alert(alert_id):
    try:
        alerts.delete_alert(g.api_user.id, alert_id)
    except NotFound:
        return json_error(404, "not_found", "No such alert.")
    return "", 204
