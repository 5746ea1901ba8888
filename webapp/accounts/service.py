"""Users, passwords and API keys: shared by the pages, the API and the CLI."""

import hashlib
import secrets
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email
from flask import current_app, flash, make_response, redirect, request
from flask_login import login_required, login_url
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError

from webapp.accounts import security_events, sessions, throttle
from webapp.exceptions import InvalidInput
from webapp.extensions import db, login_manager
from webapp.models import MAX_ID, ApiKey, User, utcnow

API_KEY_PREFIX = "tb_"
PASSWORD_MIN = 8
PASSWORD_MAX = 128


class LoginThrottled(Exception):
    def __init__(self, retry_after):
        self.retry_after = retry_after
        super().__init__(f"Too many failed attempts. Try again in {retry_after} seconds.")


def normalise_email(email):
    return (email or "").strip().lower()


def check_password_rules(password):
    if len(password) < PASSWORD_MIN:
        raise InvalidInput({"password": f"Use at least {PASSWORD_MIN} characters."})
    if len(password) > PASSWORD_MAX:
        raise InvalidInput({"password": f"Use at most {PASSWORD_MAX} characters."})


def create_user(email, password, is_admin=False):
    """Create a user; raises InvalidInput if the email is not one, is taken, or the password
    is weak (the command line's users too, not only the sign-up form's)."""
    email = normalise_email(email)
    try:  # as the sign-up form checks it (wtforms' Email)
        validate_email(email, check_deliverability=False)
    except EmailNotValidError:
        raise InvalidInput({"email": "Enter a valid email address."}) from None
    check_password_rules(password)
    if db.session.scalar(select(User.id).where(User.email == email)):
        raise InvalidInput({"email": "An account with this email already exists."})
    user = User(email=email, is_admin=is_admin)
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    return user


def sign_up(email, password):
    """Create an account, or tell the owner of a taken address: the answer must not differ.

    Returns the new user, or None when the address already had an account (whose owner gets
    a security notice). Both paths hash the password, so the time taken does not tell.
    """
    email = normalise_email(email)
    check_password_rules(password)
    user = User(email=email)
    user.set_password(password)
    owner = db.session.scalar(select(User.id).where(User.email == email))
    if owner is None:
        db.session.add(user)
        try:
            db.session.commit()
            return user
        except IntegrityError:  # signed up twice at once: the other request won
            db.session.rollback()
            owner = db.session.scalar(select(User.id).where(User.email == email))
    if owner is not None:
        security_events.sign_up_with_taken_email(owner)
    return None


def authenticate(email, password, ip):
    """Return the user for good credentials, None for bad ones; raise LoginThrottled."""
    email = normalise_email(email)
    limit = current_app.config["LOGIN_ATTEMPTS_PER_MINUTE"]
    # Counted before the password is checked: a burst sent at once gets `limit` checks in
    # all, not one each (a check, then a count, let every request of the burst through).
    # The address first: one refused there counts nothing against the account, or a blocked
    # address could lock anyone out.
    if throttle.hit("login-ip", ip) > limit:
        raise LoginThrottled(throttle.blocked_for("login-ip", ip, limit))
    tries = throttle.hit("login-account", email)
    if tries > limit:
        throttle.forgive("login-ip", ip)
        raise LoginThrottled(throttle.blocked_for("login-account", email, limit))
    user = db.session.scalar(select(User).where(User.email == email))
    if user is not None and user.check_password(password):
        throttle.reset("login-account", email)
        throttle.forgive("login-ip", ip)  # only failures count against an address
        return user
    security_events.failed_login(email, ip, tries)
    return None


def change_password(user, current, new, keep_session=None):
    """Set a new password and end every session of the user but `keep_session`."""
    if not user.check_password(current):
        raise InvalidInput({"current_password": "That is not your current password."})
    check_password_rules(new)
    user.set_password(new)
    db.session.commit()
    sessions.end_all(user.id, keep=keep_session)
    security_events.password_changed(user)


@login_required
def require_login():
    """A blueprint's before_request hook: every view in it needs a signed-in user."""


@login_manager.user_loader
def load_user(user_id):
    uid, _, version = user_id.partition(":")
    if not uid.isdigit() or not sessions.is_live(int(uid)):
        return None  # a logged-out, expired or pre-upgrade session: anonymous at once
    user = db.session.get(User, int(uid))
    if user is None or str(user.session_version) != version:
        return None
    return user


def _own_page(url):
    """A Referer naming a page of this site, else None (another site's path is no way back)."""
    if url and urlsplit(url).netloc == request.host:
        return url
    return None


@login_manager.unauthorized_handler
def unauthorized():
    """To the login page; an htmx request (a stale tab's poll or form) takes the whole tab there
    instead of swapping the login page into a fragment of the old one."""
    flash(login_manager.login_message, login_manager.login_message_category)
    if request.headers.get("HX-Request") != "true":
        # back where the user was after signing in: a form posted goes back to its page
        # (the form's own URL answers only POST: a GET of it after the login is a 405)
        back = request.url if request.method == "GET" else _own_page(request.referrer)
        return redirect(login_url(login_manager.login_view, next_url=back))
    page = request.headers.get("HX-Current-URL") or request.url
    response = make_response("", 401)
    response.headers["HX-Redirect"] = login_url(login_manager.login_view, next_url=page)
    return response


def _hash(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


def create_api_key(user, name="default"):
    """Return (ApiKey, plaintext). The plaintext is shown once and never stored."""
    plaintext = API_KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(user=user, name=name.strip() or "default", prefix=plaintext[:10],
                 key_hash=_hash(plaintext))
    db.session.add(key)
    db.session.commit()
    security_events.api_key_created(key)
    return key, plaintext


def revoke_api_key(user, key_id):
    key = db.session.get(ApiKey, key_id) if 1 <= key_id <= MAX_ID else None
    if key is None or key.user_id != user.id or key.revoked_at:
        return None
    key.revoked_at = utcnow()
    db.session.commit()
    sessions.end_streams(user.id, [sessions.key_credential(key.id)])  # its /ws streams close
    security_events.api_key_revoked(key)
    return key


def presented_secret(header):
    """The secret sent in `header`, else an `Authorization: Bearer` token, else None."""
    value = request.headers.get(header)
    if value:
        return value.strip()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def live_api_key(plaintext):
    """The live key with this secret, or None. Keys are high-entropy, so SHA-256 suffices."""
    if not plaintext or len(plaintext) > 200:
        return None
    key = db.session.scalar(
        select(ApiKey).where(ApiKey.key_hash == _hash(plaintext), ApiKey.revoked_at.is_(None))
    )
    if key is None:
        return None
    now = utcnow()
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
        key.last_used_at = now  # at most one write a minute per key
        try:
            db.session.commit()
        except OperationalError:  # bookkeeping: a locked database must not refuse the call
            db.session.rollback()
            key = db.session.get(ApiKey, key.id)
    return key


def user_for_api_key(plaintext):
    """The user owning a live key, or None."""
    key = live_api_key(plaintext)
    return key.user if key is not None else None


def api_key_is_live(key_id):
    return db.session.scalar(
        select(ApiKey.id).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
    ) is not None


def live_api_keys(user):
    return db.session.scalars(
        select(ApiKey)
        .where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.created_at.desc())
    ).all()
