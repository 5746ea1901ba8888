"""Delivery preferences: validation, quiet hours, strategy follows and push subscriptions."""

import base64
import binascii
import ipaddress
import logging
import re
import socket
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, available_timezones

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from webapp.core import addresses, logs
from webapp.exceptions import InvalidInput
from webapp.extensions import db
from webapp.models import MAX_ID, Preference, PushSubscription, StrategyFollow
from webapp.notify import types as notification_types

BOOLEAN_FIELDS = (
    "rt_order_execution", "rt_strategy_status", "rt_price_alerts",
    "sms_risk_violations", "sms_order_failures", "sms_account_security",
    "email_alerts", "email_daily_summary", "email_weekly_performance", "email_monthly_statements",
)
TEXT_FIELDS = ("max_per_minute", "quiet_start", "quiet_end", "timezone", "phone", "delivery_email",
               "insist_every_min", "insist_rounds")
LIST_FIELDS = ("insist_types",)  # several values under one name (checkboxes)
FIELDS = BOOLEAN_FIELDS + TEXT_FIELDS + LIST_FIELDS
MAX_PER_MINUTE_RANGE = (1, 1000)
INSIST_EVERY_RANGE = (1, 1440)  # minutes between the repeats of an alert that insists
INSIST_ROUNDS_RANGE = (1, 20)
# ASCII digits only: \d also takes "1٢:00", which saves but time.fromisoformat refuses later.
E164 = re.compile(r"^\+[1-9][0-9]{6,14}\Z")
HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]\Z")
STRATEGY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}\Z")

log = logging.getLogger(__name__)


# In the zone database but no place: "Factory" is a placeholder, and "localtime" (or
# "posixrules") is whatever zone this server is set to.
NOT_PLACES = frozenset({"Factory", "localtime", "posixrules"})


@lru_cache(maxsize=1)
def timezones():
    return frozenset(available_timezones() - NOT_PLACES | {"UTC"})


def preferences_for(user_id):
    """The user's Preference row, created with the defaults on first use."""
    pref = db.session.get(Preference, user_id)
    if pref is not None:
        return pref
    try:
        with db.session.begin_nested():
            db.session.add(Preference(user_id=user_id))
        db.session.commit()
    except IntegrityError:  # another process made it first
        db.session.rollback()
    return db.session.get(Preference, user_id)


def _clean_bool(value):
    return str(value).strip().lower() in {"1", "true", "on", "yes", "y"}


WHOLE_NUMBER = re.compile(r"-?[0-9]+")


def _whole_number(low, high):
    def clean_number(value):
        text = str(value).strip()
        if not WHOLE_NUMBER.fullmatch(text):  # int() also takes "٦٥" and "1_000"
            raise ValueError("Enter a whole number.")
        # too many digits to be in range, however many (10^400 was "not a whole number")
        if len(text.lstrip("-")) > 9 or not low <= int(text) <= high:
            raise ValueError(f"Choose between {low} and {high}.")
        return int(text)
    return clean_number


def _clean_types(values):
    """A list of notification type names (checkboxes), each one known; None: the default."""
    if values is None:
        return None
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values):
        raise ValueError("Send a list of notification types.")
    unknown = [v for v in values if v not in notification_types.TYPES]
    if unknown:
        raise ValueError(f"Unknown notification type: {str(unknown[0])[:40]}.")
    return sorted(set(values))


def insisting_types(pref):
    """The types that repeat until acknowledged: the user's choice, else urgent and critical."""
    if pref.insist_types is None:
        return notification_types.URGENT_TYPES | notification_types.CRITICAL_TYPES
    return frozenset(pref.insist_types)


def _clean_hhmm(value):
    value = (value or "").strip()
    if not value:
        return None
    if not HHMM.match(value):
        raise ValueError("Use 24-hour time like 22:00.")
    return value


def _clean_timezone(value):
    value = (value or "").strip()
    if value not in timezones():
        raise ValueError("Choose a time zone from the list, e.g. Europe/Berlin.")
    return value


def _clean_phone(value):
    value = re.sub(r"[\s().-]", "", value or "")
    if not value:
        return None
    if not E164.match(value):
        raise ValueError("Use the international format with country code, e.g. +14155550123.")
    return value


def _clean_email(value):
    value = (value or "").strip()
    if not value:
        return None
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None


CLEANERS = {"max_per_minute": _whole_number(*MAX_PER_MINUTE_RANGE),
            "insist_every_min": _whole_number(*INSIST_EVERY_RANGE),
            "insist_rounds": _whole_number(*INSIST_ROUNDS_RANGE), "insist_types": _clean_types,
            "quiet_start": _clean_hhmm, "quiet_end": _clean_hhmm,
            "timezone": _clean_timezone, "phone": _clean_phone, "delivery_email": _clean_email}


def clean(values):
    """Validate {field: raw value}; return cleaned values or raise InvalidInput for all errors."""
    cleaned, errors = {}, {}
    for field, raw in values.items():
        if field not in FIELDS:
            errors[field] = "Unknown setting."
            continue
        try:
            cleaned[field] = _clean_bool(raw) if field in BOOLEAN_FIELDS else CLEANERS[field](raw)
        except ValueError as exc:
            errors[field] = str(exc)
    if errors:
        raise InvalidInput(errors)
    return cleaned


def update(user_id, values):
    """Validate and save some settings, all or nothing; return the Preference row."""
    cleaned = clean(values)
    pref = preferences_for(user_id)
    for field, value in cleaned.items():
        setattr(pref, field, value)
    start, end = pref.quiet_start, pref.quiet_end
    if start and end and start == end:
        db.session.rollback()
        raise InvalidInput({"quiet_end": "Quiet hours must end at another time than they start."})
    db.session.commit()
    return pref


def zone(pref):
    try:
        return ZoneInfo(pref.timezone or "UTC")
    except (KeyError, ValueError):  # a zone removed from tzdata since it was saved
        return ZoneInfo("UTC")


def user_zone(user_id):
    """The zone the user's times are shown and entered in (UTC until they choose one)."""
    pref = db.session.get(Preference, user_id)  # read only: a page view writes nothing
    return zone(pref) if pref is not None else ZoneInfo("UTC")


def _clock(value, user_id):
    try:
        return time.fromisoformat(value)
    except ValueError:  # saved before the check took ASCII digits only
        logs.event(log, "bad_quiet_hours", logging.WARNING, user_id=user_id, value=str(value))
        return None


def quiet_until(pref, when):
    """If `when` (aware) falls in the user's quiet hours, the aware UTC time they end; else None."""
    if not (pref.quiet_start and pref.quiet_end) or pref.quiet_start == pref.quiet_end:
        return None
    local = when.astimezone(zone(pref))
    start, end = _clock(pref.quiet_start, pref.user_id), _clock(pref.quiet_end, pref.user_id)
    if start is None or end is None:
        return None
    now = local.time()
    inside = start <= now < end if start < end else (now >= start or now < end)
    if not inside:
        return None
    end_day = local.date() if now < end else local.date() + timedelta(days=1)
    return _first_reading(datetime.combine(end_day, end, tzinfo=zone(pref)))


def _first_reading(local):
    """The aware UTC instant the local clock first reads `local` or later.

    A time the clocks skip (spring forward) is passed when they jump, which is found by
    halving the interval between its two readings: fold=0 alone is up to an hour late.
    """
    wall, utc = local.replace(tzinfo=None), local.astimezone(UTC)
    if utc.astimezone(local.tzinfo).replace(tzinfo=None) == wall:
        return utc
    early = int(local.replace(fold=1).timestamp())  # read with the later offset: before the jump
    late = int(local.timestamp())  # fold=0: read with the earlier offset, after the jump
    while late - early > 1:
        middle = (early + late) // 2
        if datetime.fromtimestamp(middle, local.tzinfo).replace(tzinfo=None) >= wall:
            late = middle
        else:
            early = middle
    return datetime.fromtimestamp(late, UTC)


def _strategy_id(given):
    strategy_id = (given or "").strip()
    if not STRATEGY_ID.match(strategy_id):
        raise InvalidInput({"strategy_id": "Use 1-64 letters, digits, '.', '_', ':' or '-'."})
    return strategy_id


def follow(user_id, strategy_id):
    strategy_id = _strategy_id(strategy_id)
    exists = db.session.scalar(select(StrategyFollow.id).where(
        StrategyFollow.user_id == user_id, StrategyFollow.strategy_id == strategy_id))
    if not exists:
        db.session.add(StrategyFollow(user_id=user_id, strategy_id=strategy_id))
        db.session.commit()
    return strategy_id


def unfollow(user_id, strategy_id):
    strategy_id = _strategy_id(strategy_id)  # no other was followed (PostgreSQL refuses NUL)
    db.session.execute(delete(StrategyFollow).where(
        StrategyFollow.user_id == user_id, StrategyFollow.strategy_id == strategy_id))
    db.session.commit()


def followed(user_id):
    return db.session.scalars(select(StrategyFollow.strategy_id).where(
        StrategyFollow.user_id == user_id).order_by(StrategyFollow.strategy_id)).all()


def followers(strategy_id):
    return db.session.scalars(select(StrategyFollow.user_id).where(
        StrategyFollow.strategy_id == strategy_id).order_by(StrategyFollow.user_id)).all()


def _literal_ip(host):
    """The address a host names literally (incl. forms like 2130706433 or 127.1), else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        try:  # inet_aton takes the legacy forms that resolvers turn into an address too
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None


# A push service's host as browsers are given it: plain ASCII, no percent-escape or other
# spelling that an HTTP client would decode into another host than the one checked here
PUSH_HOST = re.compile(r"[a-z0-9.:-]+")


def push_endpoint_allowed(endpoint, config=None):
    """True for an https URL that does not name this machine or a private network.

    PUSH_ALLOW_INSECURE_ENDPOINTS (tests: a loopback http server) lifts both rules. Host
    names are not resolved here (a save resolves its own, `_resolves_inwards`): the send
    refuses a name that resolves inwards then (webapp/delivery/channels/push.py).
    """
    config = config if config is not None else current_app.config
    try:
        parts = urlsplit(endpoint)
        host = (parts.hostname or "").rstrip(".").lower()
    except ValueError:
        return False
    if not host or parts.scheme not in ("https", "http"):
        return False
    if config.get("PUSH_ALLOW_INSECURE_ENDPOINTS"):
        return True
    if (parts.scheme != "https" or "@" in parts.netloc or not PUSH_HOST.fullmatch(host)
            or host == "localhost" or host.endswith(".localhost")):
        return False
    ip = _literal_ip(host)
    return ip is None or addresses.is_public(str(ip))


def _resolves_inwards(endpoint):
    """Whether a subscription's host name resolves to a private address now: refused when
    saved, as a destination's is (the send checks again: it may point elsewhere later)."""
    if current_app.config.get("PUSH_ALLOW_INSECURE_ENDPOINTS"):
        return False
    host = urlsplit(endpoint).hostname or ""
    return not all(addresses.is_public(found) for found in addresses.resolve(host, 443))


B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")  # a subscription's keys, as browsers send them


def _key_bytes(text):
    """A subscription key's bytes (base64url, padded or not); b"" if it is none."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, binascii.Error):
        return b""


def _keys_usable(keys):
    """The keys Web Push encrypts with: a P-256 public key, uncompressed (65 bytes from
    0x04), and a 16-byte secret. Any others fail every send."""
    p256dh, auth = _key_bytes(keys["p256dh"]), _key_bytes(keys["auth"])
    return len(p256dh) == 65 and p256dh[0] == 4 and len(auth) == 16


def _valid_subscription(payload):
    """(endpoint, keys) of a browser's PushSubscription JSON; InvalidInput otherwise."""
    keys = payload.get("keys") if isinstance(payload, dict) else None
    endpoint = payload.get("endpoint") if isinstance(payload, dict) else None
    if not (isinstance(endpoint, str) and len(endpoint) <= 1000 and isinstance(keys, dict)
            and isinstance(keys.get("p256dh"), str) and isinstance(keys.get("auth"), str)
            and B64URL.fullmatch(keys["p256dh"]) and B64URL.fullmatch(keys["auth"])
            and len(keys["p256dh"]) <= 200 and len(keys["auth"]) <= 100):
        raise InvalidInput({"subscription": "Send the browser's PushSubscription as JSON."})
    if not _keys_usable(keys):
        raise InvalidInput({"subscription": "Its keys are not a browser's push keys (p256dh: "
                                            "a P-256 public key, auth: 16 bytes)."})
    if not push_endpoint_allowed(endpoint) or _resolves_inwards(endpoint):
        raise InvalidInput({"subscription": "The endpoint must be an https URL of a push "
                                            "service, not a local or private address."})
    return endpoint, keys


def save_push_subscription(user_id, payload, user_agent=""):
    """Store the browser's PushSubscription JSON; one row per endpoint (device)."""
    endpoint, keys = _valid_subscription(payload)
    sub = db.session.scalar(select(PushSubscription).where(PushSubscription.endpoint == endpoint))
    if sub is not None and sub.user_id != user_id:
        # Moving it would hand the other account's notifications to this one, or the reverse.
        raise InvalidInput({"subscription": "This browser is subscribed for another account; "
                                            "turn push off there first."})
    if sub is None:
        sub = PushSubscription(endpoint=endpoint)
        db.session.add(sub)
    sub.user_id, sub.p256dh, sub.auth = user_id, keys["p256dh"], keys["auth"]
    sub.user_agent = (user_agent or "")[:300]
    db.session.commit()
    return sub


def remove_push_subscription(user_id, endpoint=None, sub_id=None):
    """Forget one of the user's devices, by endpoint or row id; True if one was removed."""
    if sub_id is not None and not 1 <= sub_id <= MAX_ID:
        return False  # no row can have it; the database would refuse the number
    if sub_id is None and not isinstance(endpoint, str):
        return False
    query = delete(PushSubscription).where(PushSubscription.user_id == user_id)
    if sub_id is not None:
        query = query.where(PushSubscription.id == sub_id)
    else:
        query = query.where(PushSubscription.endpoint == (endpoint or ""))
    removed = db.session.execute(query).rowcount
    db.session.commit()
    return bool(removed)


def push_subscriptions(user_id):
    return db.session.scalars(select(PushSubscription).where(
        PushSubscription.user_id == user_id).order_by(PushSubscription.created_at)).all()
