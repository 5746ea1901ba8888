"""The receiver (POST /hooks/<token>: no session, no CSRF, JSON answers) and the settings
page that makes and revokes hooks (HTMX swaps the list; plain forms work too)."""

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from webapp import keys
from webapp.accounts import sessions
from webapp.errors import is_htmx
from webapp.exceptions import InvalidInput, NotFound
from webapp.extensions import get_redis
from webapp.hooks import service as hooks
from webapp.hooks.forms import HookForm

bp = Blueprint("hooks", __name__)

NEW_URL_TTL_S = 300  # a new hook's URL waits this long for the page that shows it once


@bp.post("/hooks/<token>")
def receive(token):
    """TradingView's alert (text or JSON) -> 202 {"id"}; exempt from CSRF in create_app."""
    request.max_content_length = None  # the service's own limit answers, in JSON
    reply = hooks.receive(token, request.mimetype, _body(hooks.MAX_BODY + 1),
                          request.remote_addr)
    response = jsonify(reply.body)
    if reply.retry_after:
        response.headers["Retry-After"] = str(reply.retry_after)
    return response, reply.status


def _body(limit):
    """At most `limit` bytes: enough to tell a body over the service's limit."""
    raw = b""
    while len(raw) < limit:
        chunk = request.stream.read(limit - len(raw))
        if not chunk:
            break
        raw += chunk
    return raw


@bp.route("/settings/hooks", methods=["GET", "POST"])
@login_required
def settings():
    """Create a hook: HTMX gets the list with the URL at once; a plain form, post-redirect-get."""
    form, new_url = HookForm(), None
    if form.validate_on_submit():
        try:
            _, new_url = hooks.create(current_user.id, form.name.data)
        except InvalidInput as exc:
            form.name.errors.append(exc.errors["name"])
        else:
            if not is_htmx():
                get_redis().set(_new_url_key(), new_url, ex=NEW_URL_TTL_S)
                return redirect(url_for("hooks.settings"), 303)
            form = HookForm(formdata=None)  # emptied for the next hook
    elif request.method == "GET":
        new_url = get_redis().getdel(_new_url_key())
    return _render(form, new_url), 422 if form.errors else 200


@bp.post("/settings/hooks/<int:hook_id>/revoke")
@login_required
def revoke(hook_id):
    try:
        hook = hooks.revoke(current_user.id, hook_id)
    except NotFound:
        abort(404)
    if is_htmx():
        return _render(HookForm(formdata=None), None, revoked=hook.name)
    flash(f"Hook {hook.name!r} revoked: its URL answers 404 from now on.", "info")
    return redirect(url_for("hooks.settings"), 303)


def _render(form, new_url, revoked=None):
    """The page, or for HTMX its list alone: the same partial either way."""
    template = "hooks/_hooks.html" if is_htmx() else "hooks/index.html"
    return render_template(template, form=form, new_url=new_url, revoked=revoked,
                           hooks=hooks.live_hooks(current_user.id))


def _new_url_key():
    """Where a new URL waits for its one showing: this session's, no one else's."""
    return keys.new_hook(sessions.current_sid())
