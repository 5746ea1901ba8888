"""Inbound webhooks: a user's hook tokens, and what arrives at /hooks/<token>.

A token is a secret URL (TradingView can send no header), so it is kept only hashed and
shown once. A hook answers fast (TradingView gives up after 3 s): the notification goes into
the inbox and live feed here; its audit row and deliveries run later, from the router's job.
"""

import hashlib
import logging
import secrets
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from webapp import clock, keys
from webapp.accounts import throttle
from webapp.core import database, logs, text
from webapp.exceptions import InvalidInput, NotFound
from webapp.extensions import db, get_redis
from webapp.hooks import body as hook_body
from webapp.models import MAX_ID, HookToken
from webapp.notify import router

TOKEN_PREFIX = "tbh_"
NAME_MAX = 80
MAX_HOOKS = 20  # live hooks a user may hold
MAX_BODY = 16 * 1024  # TradingView's alert text is far shorter
DUPLICATE_WINDOW_S = 60
NOTIFICATION_TYPE = "WEBHOOK_ALERT"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    """What a hook answers: status, JSON body, Retry-After seconds; `outcome` for the log."""

    status: int
    body: dict
    outcome: str
    retry_after: int | None = None


NOT_FOUND = Reply(404, {"error": "not_found", "detail": "No such hook."}, "not_found")


def _hash(secret):
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


def url_of(plaintext):
    return f"{current_app.config['PUBLIC_URL']}/hooks/{plaintext}"


def create(user_id, name):
    """Return (HookToken, its URL). The URL holds the secret: shown once, never stored."""
    name = " ".join(name.split()) if isinstance(name, str) else ""
    if not name or len(name) > NAME_MAX:
        raise InvalidInput({"name": f"Name the hook in 1-{NAME_MAX} characters."})
    if not text.is_line(name):
        raise InvalidInput({"name": "Control characters are not allowed in a name."})
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    hook = HookToken(user_id=user_id, name=name, prefix=plaintext[:10],
                     token_hash=_hash(plaintext))

    def held():
        return db.session.scalar(select(func.count(HookToken.id)).where(
            HookToken.user_id == user_id, HookToken.revoked_at.is_(None)))

    if not database.add_within(hook, user_id, held, MAX_HOOKS):
        raise InvalidInput({"name": f"You have {MAX_HOOKS} hooks, the most one account may "
                                    "hold; revoke one first."})
    db.session.commit()
    return hook, url_of(plaintext)


def live_hooks(user_id):
    """The user's hooks that still answer, newest first."""
    return db.session.scalars(select(HookToken).where(
        HookToken.user_id == user_id, HookToken.revoked_at.is_(None))
        .order_by(HookToken.created_at.desc(), HookToken.id.desc())).all()


def revoke(user_id, hook_id):
    """Revoke one of the user's live hooks; NotFound for a missing, revoked or another's."""
    hook = db.session.get(HookToken, hook_id) if 1 <= hook_id <= MAX_ID else None
    if hook is None or hook.user_id != user_id or hook.revoked_at is not None:
        raise NotFound(hook_id)
    hook.revoked_at = clock.utcnow()
    db.session.commit()
    return hook


def to_json(hook):
    """The API's view of a hook: never its URL, only the prefix that names it."""
    return {"id": hook.id, "name": hook.name, "prefix": hook.prefix,
            "created_at": _iso(hook.created_at), "last_used_at": _iso(hook.last_used_at)}


def _iso(dt):
    return None if dt is None else clock.ms_to_iso(clock.to_ms(dt))


def receive(token, content_type, raw, sender_ip):
    """Turn one webhook request into a WEBHOOK_ALERT notification; returns the Reply.

    An unknown and a revoked token cost the same one query and answer the same 404.
    """
    hook = db.session.scalar(select(HookToken).where(
        HookToken.token_hash == _hash(token or ""), HookToken.revoked_at.is_(None)))
    reply = NOT_FOUND if hook is None else _handle(hook, content_type or "", raw)
    logs.event(log, "hook_received", hook=getattr(hook, "id", "-"),
               prefix=getattr(hook, "prefix", "-"), user_id=getattr(hook, "user_id", "-"),
               ip=sender_ip or "-", bytes=len(raw), status=reply.status, outcome=reply.outcome,
               notification_id=reply.body.get("id") or "-")
    return reply


def _handle(hook, content_type, raw):
    limit = current_app.config["HOOK_RATE_PER_MINUTE"]
    if throttle.hit("hook", hook.id) > limit:
        wait = max(get_redis().ttl(keys.throttle("hook", hook.id)), 1)
        return Reply(429, {"error": "too_many_requests", "detail": (
            f"This hook takes {limit} requests a minute; try again in {wait} s.")},
            "rate_limited", retry_after=wait)
    if len(raw) > MAX_BODY:
        return Reply(413, {"error": "payload_too_large",
                           "detail": f"A hook's body is at most {MAX_BODY} bytes."}, "too_large")
    try:
        fields = hook_body.read(content_type, raw)
    except hook_body.BadBody as exc:
        return Reply(400, {"error": "bad_request", "detail": str(exc)}, "bad_body")
    except InvalidInput as exc:
        return Reply(422, {"error": "invalid_input", "detail": exc.errors}, "invalid")
    return _deliver(hook, raw, fields)


def _deliver(hook, raw, fields):
    """Route the notification once per identical body a minute (TradingView may resend)."""
    r = get_redis()
    seen = keys.hook_seen(hook.id, hashlib.sha256(raw).hexdigest())
    if not r.set(seen, "", nx=True, ex=DUPLICATE_WINDOW_S):
        _touch(hook)
        return Reply(202, {"id": r.get(seen) or None, "duplicate": True}, "duplicate")
    try:
        nid, _ = router.route({
            "user_id": hook.user_id, "type": NOTIFICATION_TYPE,
            "title": fields["title"] or hook.name, "message": fields["message"],
            "priority": fields["priority"], "data": fields["data"]}, source="hook")
    except BaseException:
        r.delete(seen)  # nothing was made: a resend must not be taken for a duplicate
        raise
    r.set(seen, nid, xx=True, keepttl=True)  # a duplicate answers with the id it repeats
    _touch(hook)
    return Reply(202, {"id": nid}, "accepted")


def _touch(hook):
    """Bookkeeping: a locked database must not turn a delivered alert into an error."""
    hook.last_used_at = clock.utcnow()
    try:
        db.session.commit()
    except OperationalError:
        db.session.rollback()
