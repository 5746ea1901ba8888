"""The delivery plan: which channels a notification goes out on, and when.

The type and the user's toggles choose the channels (or the alert names them); critical goes
now; quiet hours hold the rest until they end; past the user's per-minute limit it waits for
the next digest.
"""

from dataclasses import dataclass

from sqlalchemy import select

from webapp import clock, keys
from webapp.delivery import dispatch
from webapp.extensions import db, get_redis
from webapp.insist import service as insist
from webapp.models import (
    Alert,
    DeliveryStatus,
    Destination,
    Preference,
    PushSubscription,
    User,
    row_id,
)
from webapp.notify import types as notification_types
from webapp.preferences import service as preferences

RATE_WINDOW_MS = 60_000
LATE_WINDOWS = 10


@dataclass(frozen=True)
class Recipient:
    """What planning needs to know about a user, read once a batch."""

    pref: Preference
    has_push: bool
    destinations: tuple[Destination, ...] = ()  # the enabled ones


def settings(user_ids):
    """{user_id: Recipient} of the users that still exist."""
    found = {}
    for user_id in dict.fromkeys(user_ids):
        if db.session.get(User, user_id) is None:
            continue
        has_push = db.session.scalar(select(PushSubscription.id).where(
            PushSubscription.user_id == user_id).limit(1))
        destinations = db.session.scalars(select(Destination).where(
            Destination.user_id == user_id, Destination.enabled).order_by(Destination.id)).all()
        found[user_id] = Recipient(preferences.preferences_for(user_id), has_push is not None,
                                   tuple(destinations))
    return found


def record(notifications, recipients):
    """Plan each notification of a user in `recipients`, write the delivery rows (once per
    id and channel) and queue those due now; returns the queued rows' ids."""
    chosen = alert_channels(notifications)
    queued = dispatch.record_planned([
        (n, plan(n, recipients[int(n["user_id"])], chosen.get(str(n.get("alert_id") or ""))))
        for n in notifications])
    insist.start(notifications, recipients, chosen)
    return queued


def alert_channels(notifications):
    """{alert id: the channels it names} for the notifications' alerts that name any."""
    ids = {row_id(n.get("alert_id")) for n in notifications} - {None}
    if not ids:
        return {}
    rows = db.session.execute(select(Alert.id, Alert.channels).where(
        Alert.id.in_(ids), Alert.channels.is_not(None))).all()
    return {str(alert_id): channels for alert_id, channels in rows}


def wanted_channels(notification, recipient, chosen=None):
    """Channels the alert names, else those the type, priority and the user's toggles ask
    for; before timing rules."""
    if chosen is not None:
        return named_channels(chosen, recipient)
    pref, kind = recipient.pref, notification_types.get(notification["type"])
    critical = notification_types.is_critical(notification)
    low = notification.get("priority") == "low"
    toggle = kind.realtime_toggle if kind else None
    realtime = critical or (not low and (toggle is None or getattr(pref, toggle)))
    channels = []
    if realtime and recipient.has_push:
        channels.append("push")
    if realtime and (critical or pref.email_alerts):
        channels.append("email")
    if kind and kind.sms_toggle and getattr(pref, kind.sms_toggle) and not low:
        channels.append("sms")
    return channels + [d.channel for d in recipient.destinations
                       if (realtime if d.types is None else notification["type"] in d.types)]


def named_channels(chosen, recipient):
    """An alert's own list: built-in names, and destination ids that are still enabled."""
    enabled = {d.id: d.channel for d in recipient.destinations}
    channels = []
    for name in chosen:
        if name == "push" and not recipient.has_push:
            continue
        channel = enabled.get(name) if isinstance(name, int) else name
        if channel in ("email", "sms", "push") or channel in enabled.values():
            channels.append(channel)
    return list(dict.fromkeys(channels))


def plan(notification, recipient, chosen=None):
    """{channel: (status, due)}: critical goes now; quiet hours hold; over the limit waits."""
    pref = recipient.pref
    channels = wanted_channels(notification, recipient, chosen)
    if not channels:
        return {}
    if notification_types.is_critical(notification):
        return dict.fromkeys(channels, (DeliveryStatus.QUEUED, None))
    until = preferences.quiet_until(pref, clock.ms_to_datetime(notification["created_at"]))
    if until is not None:
        return dict.fromkeys(channels, (DeliveryStatus.HELD, until.replace(tzinfo=None)))
    # counted when it goes out, now: a notification planned late (a batch the safety net
    # took over) lands in this minute's inbox of emails, not in the minute it was made
    if over_limit(pref, notification["id"], clock.now_ms()):
        return dict.fromkeys(channels, (DeliveryStatus.DIGEST, None))
    return dict.fromkeys(channels, (DeliveryStatus.QUEUED, None))


# Counts only what went out, so a flood that is held back does not block the next minute.
# Notifications are planned in any order (a batch's slow steps after a later event's), so a
# new one is checked against every minute that holds it, not only the one ending at it:
# added, no window of `window` ms holds more than `limit`. Those windows start in
# (at - window, at]; sliding one later, its count grows only as its end reaches a later
# delivery, so the starts to check are the earliest and each such arrival's. Two pointers
# count each window.
# Deliveries are remembered LATE_WINDOWS minutes, so one planned up to that late (a batch the
# safety net took over: 1-2 minutes) is still counted right.
# KEYS: 1 keys.delivery_rate(uid)   ARGV: 1 nid  2 at ms  3 window ms  4 limit
RATE_SCRIPT = """
local LATE_WINDOWS = """ + str(LATE_WINDOWS) + """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local at, window, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
-- forgotten LATE_WINDOWS windows back from now (Redis's clock), never from `at`: a later
-- notification planned first must not drop what an earlier one planned late still needs
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - LATE_WINDOWS * window)
local found = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (at - window), '(' .. (at + window),
  'WITHSCORES')
local t = {}
for i = 2, #found, 2 do t[#t + 1] = tonumber(found[i]) end
local starts = {at - window + 1}
for _, v in ipairs(t) do if v > at then starts[#starts + 1] = v - window + 1 end end
local first, past = 1, 1 -- t[first..past-1]: the deliveries in [start, start + window)
for _, start in ipairs(starts) do
  while first <= #t and t[first] < start do first = first + 1 end
  if past < first then past = first end
  while past <= #t and t[past] < start + window do past = past + 1 end
  if past - first >= limit then return 1 end
end
redis.call('ZADD', KEYS[1], at, ARGV[1])
redis.call('PEXPIRE', KEYS[1], LATE_WINDOWS * window)
return 0
"""


def over_limit(pref, nid, at_ms):
    """True if one more delivery at `at_ms` would make more than max_per_minute in a minute."""
    over = get_redis().eval(RATE_SCRIPT, 1, keys.delivery_rate(pref.user_id), str(nid), at_ms,
                            RATE_WINDOW_MS, pref.max_per_minute)
    return bool(over)
