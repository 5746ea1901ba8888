from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_user

from webapp import keys
from webapp.accounts import service as accounts
from webapp.accounts import sessions
from webapp.accounts.forms import ApiKeyForm, ChangePasswordForm
from webapp.errors import is_htmx
from webapp.exceptions import InvalidInput
from webapp.extensions import get_redis

bp = Blueprint("settings", __name__, url_prefix="/settings")
bp.before_request(accounts.require_login)


@bp.route("/password", methods=["GET", "POST"])
def change_password():
    form = ChangePasswordForm()
    if form.validate_on_submit():
        try:
            accounts.change_password(current_user, form.current_password.data,
                                     form.new_password.data, keep_session=sessions.current_sid())
        except InvalidInput as exc:
            for field, message in exc.errors.items():
                getattr(form, field).errors.append(message)
        else:
            login_user(current_user)  # the user id in the cookie changed with the version
            flash("Password changed. Other sessions have been signed out.", "success")
            return redirect(url_for("settings.change_password"))
    return render_template("accounts/password.html", form=form,
                           session_count=sessions.count(current_user.id)), \
        422 if form.errors else 200


@bp.post("/sessions/end-all")
def log_out_everywhere():
    """Every session of the user ends, this one too (CSRFProtect checks the token)."""
    sessions.log_out(current_user.id, everywhere=True)
    flash("You are signed out on every device and browser.", "info")
    return redirect(url_for("auth.login"))


NEW_KEY_TTL_S = 300  # the new key waits this long for the page that shows it once


@bp.route("/api-keys", methods=["GET", "POST"])
def api_keys():
    """Create a key. HTMX gets the list with the key at once; a plain form redirects (a
    reload never makes another), and the GET shows the key once."""
    form, new_key = ApiKeyForm(), None
    if form.validate_on_submit():
        _, new_key = accounts.create_api_key(current_user, form.name.data)
        if not is_htmx():
            get_redis().set(_new_key(), new_key, ex=NEW_KEY_TTL_S)
            return redirect(url_for("settings.api_keys"))
        form = ApiKeyForm(formdata=None)  # emptied for the next key
    elif request.method == "GET":
        new_key = get_redis().getdel(_new_key())
    return _render_keys(form, new_key=new_key), 422 if form.errors else 200


def _new_key():
    """Where a just-made key waits for its one showing: this session's, no one else's."""
    return keys.new_api_key(sessions.current_sid())


@bp.post("/api-keys/<int:key_id>/revoke")
def revoke_api_key(key_id):
    key = accounts.revoke_api_key(current_user, key_id)
    if is_htmx():  # gone already (another tab): the list shows it gone, and says so
        return _render_keys(ApiKeyForm(formdata=None), revoked=key.name if key else None,
                            gone=key is None)
    flash("Key revoked." if key else "No such key.", "info" if key else "error")
    return redirect(url_for("settings.api_keys"))


def _render_keys(form, **shown):
    """The page, or for HTMX its list alone: the same partial either way."""
    template = "accounts/_api_keys.html" if is_htmx() else "accounts/api_keys.html"
    return render_template(template, form=form, keys=accounts.live_api_keys(current_user),
                           **shown)
