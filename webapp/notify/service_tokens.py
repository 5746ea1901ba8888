"""Service tokens: internal systems publish events with them; they can read nothing.

Each process remembers the live tokens it has looked up (webapp/notify/token_cache.py); a
revoke publishes after its commit, and every process forgets them all before its next request,
so a revoked token stops working at once without a Redis read per request.
"""

import hashlib
import secrets
from dataclasses import dataclass

from flask import current_app, g
from sqlalchemy import bindparam, select

from webapp import keys
from webapp.accounts import service as accounts
from webapp.core import text
from webapp.errors import json_error
from webapp.exceptions import InvalidInput, NotFound
from webapp.extensions import db, get_redis
from webapp.models import ServiceToken, utcnow
from webapp.notify.token_cache import TokenCache

TOKEN_PREFIX = "tbs_"
LIVE = select(ServiceToken.id, ServiceToken.name).where(
    ServiceToken.token_hash == bindparam("digest"), ServiceToken.revoked_at.is_(None))


def _hash(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


def create(name):
    """Return (ServiceToken, plaintext); the plaintext is shown once and never stored."""
    name = (name or "").strip()
    if not name or len(name) > 80:
        raise InvalidInput({"name": "Name the token in 1-80 characters."})
    if not text.is_line(name):
        raise InvalidInput({"name": "Control characters are not allowed in a name."})
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
    r = get_redis()
    r.publish(keys.SERVICE_TOKENS_REVOKED, token.name)  # every process forgets its tokens
    # answered only once Redis has written that message to every subscriber's socket (its
    # replies go out together, after the command): from here a process cannot miss it
    r.ping()
    return token


def live_tokens():
    return db.session.scalars(select(ServiceToken).where(ServiceToken.revoked_at.is_(None))
                              .order_by(ServiceToken.name)).all()


@dataclass(frozen=True)
class LiveToken:
    """What a request needs of a live token, kept between requests (never an ORM object)."""

    id: int
    name: str


def token_for(plaintext):
    """The live token with this secret (a LiveToken), or None."""
    if not plaintext or len(plaintext) > 200:
        return None
    digest, cache = _hash(plaintext), _cache()
    epoch = cache.current()  # before the lookup: a revoke during it makes what it read stale
    known = cache.get(digest, epoch)
    if known is not None:
        return known
    # a connection of its own, handed back at once: one a request held while it asked the
    # pool for another (intake.known_users) could leave every request waiting on the pool
    with db.engine.connect() as connection:
        row = connection.execute(LIVE, {"digest": digest}).first()
    if row is None:  # unknown secrets are not remembered: a guesser cannot fill the cache
        cache.forget(digest)
        return None
    token = LiveToken(row.id, row.name)
    cache.remember(digest, token, epoch)
    return token


def _cache():
    cache = current_app.extensions.get("service_tokens")
    if cache is None:
        cache = current_app.extensions["service_tokens"] = TokenCache(get_redis())
    return cache


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
