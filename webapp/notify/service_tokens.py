"""Service tokens: internal systems publish events with them; they can read nothing."""

import hashlib
import secrets

from flask import g
from sqlalchemy import select

from webapp.accounts import service as accounts
from webapp.errors import json_error
from webapp.exceptions import InvalidInput, NotFound
from webapp.extensions import db
from webapp.models import ServiceToken, utcnow

TOKEN_PREFIX = "tbs_"


def _hash(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


def create(name):
    """Return (ServiceToken, plaintext); the plaintext is shown once and never stored."""
    name = (name or "").strip()
    if not name or len(name) > 80:
        raise InvalidInput({"name": "Name the token in 1-80 characters."})
    taken = db.session.scalar(select(ServiceToken).where(ServiceToken.name == name))
    if taken is not None and taken.revoked_at is not None:  # names are unique, revoked or not
        raise InvalidInput({"name": f"The revoked token was named {name!r}; pick another name."})
    if taken is not None:
        raise InvalidInput({"name": f"A token named {name!r} exists; revoke it or pick another."})
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ServiceToken(name=name, prefix=plaintext[:10], token_hash=_hash(plaintext))
    db.session.add(token)
    db.session.commit()
    return token, plaintext


def revoke(name):
    """Revoke the token called NAME: NotFound if there is none, InvalidInput if revoked."""
    name = (name or "").strip()  # as create() stored it
    token = db.session.scalar(select(ServiceToken).where(ServiceToken.name == name))
    if token is None:
        raise NotFound(f"no service token named {name!r}")
    if token.revoked_at is not None:
        raise InvalidInput({"name": f"{name!r} was already revoked "
                                    f"({token.revoked_at:%Y-%m-%d %H:%M} UTC)"})
    token.revoked_at = utcnow()
    db.session.commit()
    return token


def live_tokens():
    return db.session.scalars(select(ServiceToken).where(ServiceToken.revoked_at.is_(None))
                              .order_by(ServiceToken.name)).all()


def token_for(plaintext):
    """The live token with this secret, or None."""
    if not plaintext or len(plaintext) > 200:
        return None
    return db.session.scalar(select(ServiceToken).where(
        ServiceToken.token_hash == _hash(plaintext), ServiceToken.revoked_at.is_(None)))


def presented():
    return accounts.presented_secret("X-Service-Token")


def authenticate_request():
    """before_request for service endpoints: set g.service_token or answer 401."""
    g.service_token = token_for(presented())
    if g.service_token is None:
        return json_error(401, "unauthorized",
                          "Send a service token in X-Service-Token or Authorization: Bearer "
                          "(create one with `flask tokens create NAME`).")
    return None
