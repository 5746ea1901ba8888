"""Account security notifications the app raises itself (type ACCOUNT_SECURITY, critical)."""

import hashlib
import logging

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from webapp.accounts import throttle
from webapp.extensions import db
from webapp.models import KnownDevice, User
from webapp.notify import router

log = logging.getLogger(__name__)

FAILED_LOGINS_ALERT_AT = 3  # failures in the throttle window before the owner hears of it
SIGN_UP_NOTICE_WINDOW_S = 3600  # one notice an hour, however often someone tries the address


def raise_event(user_id, title, message, **data):
    """Route one security notification; a failure here must not undo the user's action."""
    try:
        router.route({"user_id": user_id, "type": "ACCOUNT_SECURITY", "priority": "critical",
                      "title": title, "message": message, "data": data}, source="security")
    except Exception:  # noqa: BLE001 - logged loudly; the account change itself stands
        log.exception("could not raise security event %r for user %s", title, user_id)


def fingerprint(user_agent, ip):
    return hashlib.sha256(f"{user_agent or ''}|{ip or ''}".encode()).hexdigest()


def check_device(user, user_agent, ip):
    """After a login: remember the device; tell the user when it is new (not the first one)."""
    digest = fingerprint(user_agent, ip)
    known = db.session.scalars(select(KnownDevice.fingerprint).where(
        KnownDevice.user_id == user.id)).all()
    if digest in known:
        return False
    try:
        db.session.add(KnownDevice(user_id=user.id, fingerprint=digest))
        db.session.commit()
    except IntegrityError:  # two logins at once from the same device
        db.session.rollback()
        return False
    if known:
        raise_event(user.id, "New sign-in to your account",
                    f"Someone signed in from a new device or address: {_short(user_agent)} "
                    f"at {ip}. If this was not you, change your password now.",
                    ip=ip, user_agent=_short(user_agent))
    return bool(known)


def _short(user_agent):
    return (user_agent or "unknown browser")[:120]


def password_changed(user):
    raise_event(user.id, "Your password was changed",
                "The password of your account was changed and other sessions were signed out. "
                "If this was not you, contact support immediately.")


def sign_up_with_taken_email(user_id):
    """Someone tried to sign up with the user's address: tell them, at most once an hour."""
    if throttle.hit("sign-up-taken", user_id, window=SIGN_UP_NOTICE_WINDOW_S) != 1:
        return
    raise_event(user_id, "Someone tried to sign up with your email",
                "Someone tried to create a new Tickerbell account with your email address. "
                "Your account is unchanged. If it was you, log in with your existing password; "
                "if not, you can ignore this message.")


def api_key_created(key):
    raise_event(key.user_id, f"API key created: {key.name}",
                f"A new API key ({key.prefix}…) named {key.name!r} was created.",
                key_prefix=key.prefix)


def api_key_revoked(key):
    raise_event(key.user_id, f"API key revoked: {key.name}",
                f"The API key {key.prefix}… named {key.name!r} was revoked.",
                key_prefix=key.prefix)


def failed_login(email, ip, count):
    """Called with the failure count in the window; tells the owner once, at the threshold."""
    if count != min(FAILED_LOGINS_ALERT_AT, current_app.config["LOGIN_ATTEMPTS_PER_MINUTE"]):
        return
    user_id = db.session.scalar(select(User.id).where(User.email == email))
    if user_id is not None:
        raise_event(user_id, "Repeated failed sign-ins",
                    f"{count} sign-in attempts with a wrong password in the last minute, "
                    f"the latest from {ip}. If this was not you, consider changing your password.",
                    ip=ip, failures=count)
