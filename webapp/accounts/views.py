from urllib.parse import urlsplit

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from webapp.accounts import security_events, sessions
from webapp.accounts import service as accounts
from webapp.accounts.forms import LoginForm, RegisterForm
from webapp.exceptions import InvalidInput

bp = Blueprint("auth", __name__, url_prefix="/auth")

# The same answer whether or not the address had an account, so sign-up tells nobody which.
SIGNED_UP = ("If {email} is new to Tickerbell, your account is ready: log in below. If it "
             "already had an account, we have emailed its owner: log in with its password.")


def safe_next(target):
    """Only same-site paths: no scheme, no host, no protocol-relative tricks."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(c in target for c in "\r\n\\"):
        return None
    return target


@bp.route("/register", methods=["GET", "POST"])
def register():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.dashboard"))
    form = RegisterForm()
    if form.validate_on_submit():
        try:
            accounts.sign_up(form.email.data, form.password.data)
        except InvalidInput as exc:
            for field, message in exc.errors.items():
                getattr(form, field).errors.append(message)
        else:
            flash(SIGNED_UP.format(email=accounts.normalise_email(form.email.data)), "info")
            return redirect(url_for("auth.login"))
    return render_template("accounts/register.html", form=form), 422 if form.errors else 200


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm(next=request.args.get("next", ""))
    if form.validate_on_submit():
        try:
            user = accounts.authenticate(form.email.data, form.password.data,
                                         request.remote_addr or "unknown")
        except accounts.LoginThrottled as exc:
            form.password.errors.append(str(exc))
            return render_template("accounts/login.html", form=form), 429
        if user is None:
            form.password.errors.append("Wrong email or password.")
        else:
            sessions.log_in(user, remember=form.remember.data)
            security_events.check_device(user, request.user_agent.string, request.remote_addr)
            return redirect(safe_next(form.next.data) or url_for("dashboard.dashboard"))
    return render_template("accounts/login.html", form=form), 422 if form.errors else 200


@bp.post("/logout")
def logout():
    """Signs out; from a tab whose session already ended (elsewhere), there is nothing to end."""
    if current_user.is_authenticated:
        sessions.log_out(current_user.id)
    flash("You are signed out.", "info")
    return redirect(url_for("auth.login"))
