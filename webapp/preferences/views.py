"""The notification settings page: saves each field on change (HTMX), plain form fallback."""

from flask import (
    Blueprint,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from webapp.accounts import service as accounts
from webapp.alerts.api import json_body
from webapp.errors import is_htmx
from webapp.exceptions import InvalidInput
from webapp.notify import types as notification_types
from webapp.preferences import service as preferences

bp = Blueprint("preferences", __name__, url_prefix="/settings/notifications")
bp.before_request(accounts.require_login)


def _page(errors=None, values=None, status=200):
    pref = preferences.preferences_for(current_user.id)
    return render_template(
        "preferences/index.html", pref=pref, errors=errors or {}, values=values or {},
        timezones=sorted(preferences.timezones()), follows=preferences.followed(current_user.id),
        devices=preferences.push_subscriptions(current_user.id),
        vapid_key=current_app.config["VAPID_PUBLIC_KEY"], types=notification_types.TYPES,
        insisting=preferences.insisting_types(pref)), status


@bp.get("/")
def index():
    return _page()


@bp.post("/")
def save_all():
    """The no-JavaScript path: every field at once; unchecked boxes arrive as absent."""
    values = {f: request.form.get(f, "") for f in preferences.TEXT_FIELDS if f in request.form}
    values.update({f: f in request.form for f in preferences.BOOLEAN_FIELDS})
    values.update({f: _listed(f) for f in preferences.LIST_FIELDS if f in request.form})
    try:
        preferences.update(current_user.id, values)
    except InvalidInput as exc:
        return _page(exc.errors, values, 422)
    flash("Saved.", "success")
    return redirect(url_for("preferences.index"), 303)


def _listed(field):
    """A checkbox group's values; the page sends an empty one too, so "none" is a choice."""
    return [v for v in request.form.getlist(field) if v]


@bp.post("/field")
def save_field():
    """One field, sent by HTMX on change; answers the field's status line."""
    field = request.form.get("field", "")
    value = request.form.get(field, "")
    if field in preferences.BOOLEAN_FIELDS:
        value = field in request.form
    elif field in preferences.LIST_FIELDS:
        value = _listed(field)
    try:
        preferences.update(current_user.id, {field: value})
    except InvalidInput as exc:
        return render_template("preferences/_status.html", field=field,
                               error=next(iter(exc.errors.values()))), 422
    return render_template("preferences/_status.html", field=field, error=None)


def _follows(status=200, error=None):
    if not is_htmx():
        if error:
            flash(error, "error")
        return redirect(url_for("preferences.index") + "#strategies", 303)
    return render_template("preferences/_follows.html", error=error,
                           follows=preferences.followed(current_user.id)), status


@bp.post("/follow")
def follow():
    try:
        preferences.follow(current_user.id, request.form.get("strategy_id"))
    except InvalidInput as exc:
        return _follows(422, exc.errors["strategy_id"])
    return _follows()


@bp.post("/unfollow")
def unfollow():
    try:
        preferences.unfollow(current_user.id, request.form.get("strategy_id"))
    except InvalidInput as exc:
        return _follows(422, exc.errors["strategy_id"])
    return _follows()


@bp.post("/push/subscribe")
def push_subscribe():
    try:
        sub = preferences.save_push_subscription(current_user.id, json_body(),
                                                 request.user_agent.string)
    except InvalidInput as exc:
        return jsonify({"error": "invalid_input", "detail": exc.errors}), 422
    return jsonify({"id": sub.id}), 201


@bp.post("/push/unsubscribe")
def push_unsubscribe():
    """By endpoint (the browser's own JSON call) or by row id (the devices list's button)."""
    try:
        data = json_body() if request.is_json else {}
    except InvalidInput as exc:
        return jsonify({"error": "invalid_input", "detail": exc.errors}), 422
    sub_id = request.form.get("id", type=int)
    removed = preferences.remove_push_subscription(
        current_user.id, endpoint=data.get("endpoint"), sub_id=sub_id)
    if request.is_json:
        return jsonify({"removed": removed})
    return devices()


@bp.get("/push/devices")
def devices():
    if not is_htmx():
        return redirect(url_for("preferences.index") + "#push", 303)
    return render_template("preferences/_devices.html",
                           devices=preferences.push_subscriptions(current_user.id))
