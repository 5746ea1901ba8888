"""The destinations settings page: one partial swapped by every action (HTMX), full page
without JavaScript."""

from flask import Blueprint, abort, render_template, request
from flask_login import current_user

from webapp.accounts import service as accounts
from webapp.destinations import fields
from webapp.destinations import service as destinations
from webapp.errors import is_htmx
from webapp.exceptions import InvalidInput, NotFound
from webapp.notify import types as notification_types

bp = Blueprint("destinations", __name__, url_prefix="/settings/destinations")
bp.before_request(accounts.require_login)


def _render(status=200, errors=None, values=None, notice=None, new_secret=None):
    """The panel alone for HTMX, else the page around it; the same context either way."""
    template = "destinations/_panel.html" if is_htmx() else "destinations/index.html"
    return render_template(
        template, destinations=destinations.list_destinations(current_user.id),
        types=notification_types.TYPES, kinds=fields.KINDS, errors=errors or {},
        values=values or {"kind": "webhook", "escalate": True}, notice=notice,
        new_secret=new_secret), status


def _owned(action, dest_id):
    try:
        return action(current_user.id, dest_id)
    except NotFound:
        abort(404)


@bp.get("/")
def index():
    return _render()


@bp.post("/")
def add():
    form = request.form
    values = {"kind": form.get("kind", ""), "name": form.get("name", ""),
              "url": form.get("url", ""), "secret": form.get("secret", ""),
              "types": form.getlist("types") or None, "escalate": "escalate" in form}
    try:
        dest, secret = destinations.create(current_user.id, values)
    except InvalidInput as exc:
        values.pop("secret")  # a password field is never filled back in
        return _render(422, errors=exc.errors, values=values)
    return _render(notice=("success", f"Added {dest.name}."),
                   new_secret=(dest.name, secret) if secret else None)


@bp.post("/<int:dest_id>/delete")
def delete(dest_id):
    dest = _owned(destinations.get, dest_id)
    name = dest.name
    destinations.delete(current_user.id, dest_id)
    return _render(notice=("info", f"Deleted {name}."))


@bp.post("/<int:dest_id>/switch-on")
def switch_on(dest_id):
    dest = _owned(destinations.switch_on, dest_id)
    return _render(notice=("success", f"{dest.name} is on again."))


@bp.post("/<int:dest_id>/test")
def send_test(dest_id):
    dest = _owned(destinations.get, dest_id)
    name = dest.name
    try:
        ok, detail = destinations.send_test(current_user, dest_id)
    except destinations.TestsThrottled as exc:
        return _render(notice=("error", str(exc)))  # a notice, as a failed test's is
    if ok:
        return _render(notice=("success", f"Test sent to {name}: {detail}."))
    return _render(notice=("error", f"The test to {name} failed: {detail}"))
