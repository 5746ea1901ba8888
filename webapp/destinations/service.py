"""A user's own destinations: added, listed, changed, tested, deleted; shared by the settings
page and the API. Sending is the delivery channel's (webapp/delivery/channels/destination.py).
"""

import secrets
import uuid

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from webapp import clock
from webapp.accounts import security_events, throttle
from webapp.core import database, logs, secretbox
from webapp.delivery.channels import destination as channel
from webapp.destinations import fields
from webapp.exceptions import DeliveryRejected, InvalidInput, NotFound
from webapp.extensions import db
from webapp.models import MAX_ID, Destination, User
from webapp.preferences import service as preferences

DEFAULT_MAX_PER_USER = 20
CREATE_FIELDS = {"kind", "name", "url", "secret", "types", "escalate"}
PATCH_FIELDS = {"name", "enabled", "types", "escalate"}
TEST_TYPE = "TEST"  # not a registry type: a test reaches only the destination tested


class TestsThrottled(Exception):
    def __init__(self, retry_after):
        self.retry_after = retry_after
        super().__init__(f"Too many tests: try again in {retry_after} seconds.")


def list_destinations(user_id):
    return db.session.scalars(select(Destination).where(Destination.user_id == user_id)
                              .order_by(Destination.id)).all()


def get(user_id, dest_id):
    """The user's destination; NotFound for a missing one or another user's."""
    in_range = isinstance(dest_id, int) and 1 <= dest_id <= MAX_ID
    dest = db.session.get(Destination, dest_id) if in_range else None
    if dest is None or dest.user_id != user_id:
        raise NotFound(dest_id)
    return dest


def channel_names(user_id):
    """{"dest:<id>": name} of the user's destinations, for pages listing channels."""
    return {d.channel: d.name for d in list_destinations(user_id)}


def switched_off(user_id):
    """{"dest:<id>": why} of the user's destinations switched off: nothing goes to them."""
    return {d.channel: d.disabled_reason or "switched off" for d in list_destinations(user_id)
            if not d.enabled}


def _unknown(data, allowed):
    extra = sorted(set(data) - allowed)
    if extra:
        raise InvalidInput({extra[0][:40]: "Unknown field."})


def create(user_id, data):
    """Check and store a destination. Returns (destination, generated secret or None)."""
    _unknown(data, CREATE_FIELDS)
    kind = fields.kind(data.get("kind"))
    name, url, secret, types, escalate = _every_field(
        lambda: fields.name(data.get("name")), lambda: fields.url(kind, data.get("url")),
        lambda: fields.secret(kind, data.get("secret")), lambda: fields.types(data.get("types")),
        lambda: fields.flag("escalate", data.get("escalate", True)))
    generated = secrets.token_urlsafe(32) if kind == "webhook" and secret is None else None
    dest = Destination(user_id=user_id, kind=kind, name=name, types=types, escalate=escalate,
                       url_encrypted=secretbox.encrypt(url), url_masked=fields.masked(kind, url),
                       secret_encrypted=secretbox.encrypt(secret or generated)
                       if kind == "webhook" else None)
    _save(dest, current_app.config.get("DESTINATIONS_PER_USER", DEFAULT_MAX_PER_USER))
    return dest, generated


def _every_field(*checks):
    """Each check's value; InvalidInput naming every bad field, so a form shows them all."""
    values, errors = [], {}
    for check in checks:
        try:
            values.append(check())
        except InvalidInput as exc:
            errors.update(exc.errors)
    if errors:
        raise InvalidInput(errors)
    return values


def _held(user_id):
    return db.session.scalar(select(func.count()).where(Destination.user_id == user_id))


def _save(dest, limit=None):
    """Commit, or roll back and say the name is taken or, for a new one, that the user holds
    `limit` already (nothing half-written either way)."""
    taken = InvalidInput({"name": "You already have a destination with this name."})
    with db.session.no_autoflush:  # the query must not flush the clashing name first
        clash = db.session.scalar(select(Destination.id).where(
            Destination.user_id == dest.user_id, Destination.name == dest.name,
            Destination.id != (dest.id or 0)))
    if clash:
        db.session.rollback()
        raise taken
    try:
        if limit is None:
            db.session.add(dest)
        elif not database.add_within(dest, dest.user_id, lambda: _held(dest.user_id), limit):
            raise InvalidInput({"destinations": f"You can have at most {limit} destinations."})
        db.session.commit()
    except IntegrityError:  # the same name saved twice at once: the other request won
        db.session.rollback()
        raise taken from None


def update(user_id, dest_id, data):
    """Rename, switch on or off, choose types or escalation; all or nothing."""
    dest = get(user_id, dest_id)
    _unknown(data, PATCH_FIELDS)
    changes = {}
    if "name" in data:
        changes["name"] = fields.name(data["name"])
    if "types" in data:
        changes["types"] = fields.types(data["types"])
    if "escalate" in data:
        changes["escalate"] = fields.flag("escalate", data["escalate"])
    if "enabled" in data:
        enabled = fields.flag("enabled", data["enabled"])
        if enabled != dest.enabled:
            changes.update(enabled=enabled, failures=0,
                           disabled_reason="" if enabled else "switched off by you")
    for field, value in changes.items():
        setattr(dest, field, value)
    _save(dest)
    return dest


def switch_on(user_id, dest_id):
    """On again, the failure count from zero (the user says the receiver is fixed)."""
    return update(user_id, dest_id, {"enabled": True})


def delete(user_id, dest_id):
    db.session.delete(get(user_id, dest_id))
    db.session.commit()


def send_test(user, dest_id):
    """Send a test message now, through the channel's own build and send: (ok, detail)."""
    dest = get(user.id, dest_id)
    limit = current_app.config["DESTINATION_TESTS_PER_MINUTE"]
    if throttle.hit("destination-test", user.id) > limit:
        raise TestsThrottled(throttle.blocked_for("destination-test", user.id, limit))
    notification = {"id": f"test-{uuid.uuid4().hex}", "user_id": str(user.id),
                    "type": TEST_TYPE, "priority": "normal", "title": "Test from Tickerbell",
                    "message": f"If you can read this, the destination {dest.name!r} works.",
                    "created_at": clock.now_ms(), "data": {}}
    target = channel.DestinationChannel(dest.id)
    try:
        message = target.build(user, preferences.preferences_for(user.id), notification)
        return True, str(target.send(current_app.config, message))
    except DeliveryRejected as exc:
        return False, str(exc)
    except Exception as exc:  # noqa: BLE001 - the receiver's failure is the answer here
        return False, logs.error_text(exc, 500)
    finally:  # its count and last send were written apart from this session: read them anew
        db.session.expire(dest)


def to_json(dest, secret=None):
    """The API's view: never the URL or the secret, but a just-generated secret once."""
    body = {"id": dest.id, "kind": dest.kind, "name": dest.name, "url_masked": dest.url_masked,
            "types": dest.types, "escalate": dest.escalate, "enabled": dest.enabled,
            "disabled_reason": dest.disabled_reason or None, "failures": dest.failures,
            "created_at": _iso(dest.created_at), "last_sent_at": _iso(dest.last_sent_at)}
    if secret:
        body["secret"] = secret
    return body


def _iso(moment):
    return moment.isoformat(timespec="seconds") + "Z" if moment else None


def on_disabled(app, destination):
    """`destination_disabled`: tell the owner, as an account security notice, what stopped."""
    if db.session.get(User, destination.user_id) is None:
        return
    security_events.raise_event(
        destination.user_id, f"Destination switched off: {destination.name}",
        f"Deliveries to {destination.name} ({destination.url_masked}) failed too many times "
        f"in a row, so it was switched off. {destination.disabled_reason}. Fix the receiver, "
        "then switch it on again under Settings, Destinations.",
        destination_id=destination.id)


def init_app(app):
    channel.destination_disabled.connect(on_disabled, sender=app)
