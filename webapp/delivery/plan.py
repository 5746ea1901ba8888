"""The delivery plan: which channels a notification goes out on, and when.

The type and the user's toggles choose the channels; critical goes now; quiet hours hold
the rest until they end; past the user's per-minute limit it waits for the next digest.
"""

from sqlalchemy import select

from webapp import clock, keys
from webapp.delivery import dispatch
from webapp.extensions import db, get_redis
from webapp.models import DeliveryStatus, PushSubscription, User
from webapp.notify import types as notification_types
from webapp.preferences import service as preferences

RATE_WINDOW_MS = 60_000


def settings(user_ids):
    """{user_id: (preferences, has a push subscription)} of the users that still exist."""
    found = {}
    for user_id in dict.fromkeys(user_ids):
        if db.session.get(User, user_id) is None:
            continue
        pref = preferences.preferences_for(user_id)
        has_push = db.session.scalar(select(PushSubscription.id).where(
            PushSubscription.user_id == user_id).limit(1))
        found[user_id] = pref, has_push is not None
    return found


def record(notifications, user_settings):
    """Plan each notification of a user in `user_settings`, write the delivery rows (once per
    id and channel) and queue those due now; returns the queued rows' ids."""
    return dispatch.record_planned([
        (n, plan(n, *user_settings[int(n["user_id"])])) for n in notifications])


def wanted_channels(notification, pref, has_push):
    """Channels the type, priority and the user's toggles ask for, before timing rules."""
    kind = notification_types.get(notification["type"])
    critical = notification_types.is_critical(notification)
    low = notification.get("priority") == "low"
    toggle = kind.realtime_toggle if kind else None
    realtime = critical or (not low and (toggle is None or getattr(pref, toggle)))
    channels = []
    if realtime and has_push:
        channels.append("push")
    if realtime and (critical or pref.email_alerts):
        channels.append("email")
    if kind and kind.sms_toggle and getattr(pref, kind.sms_toggle) and not low:
        channels.append("sms")
    return channels


def plan(notification, pref, has_push):
    """{channel: (status, due)}: critical goes now; quiet hours hold; over the limit waits."""
    channels = wanted_channels(notification, pref, has_push)
    if not channels:
        return {}
    if notification_types.is_critical(notification):
        return dict.fromkeys(channels, (DeliveryStatus.QUEUED, None))
    until = preferences.quiet_until(pref, clock.ms_to_datetime(notification["created_at"]))
    if until is not None:
        return dict.fromkeys(channels, (DeliveryStatus.HELD, until.replace(tzinfo=None)))
    if over_limit(pref, notification["id"], int(notification["created_at"])):
        return dict.fromkeys(channels, (DeliveryStatus.DIGEST, None))
    return dict.fromkeys(channels, (DeliveryStatus.QUEUED, None))


# Counts only what went out, so a flood that is held back does not block the next minute.
# KEYS: 1 keys.delivery_rate(uid)   ARGV: 1 nid  2 at ms  3 window ms  4 limit
RATE_SCRIPT = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local at, window = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', at - 2 * window)
if redis.call('ZCOUNT', KEYS[1], '(' .. (at - window), at) >= tonumber(ARGV[4]) then
  return 1
end
redis.call('ZADD', KEYS[1], at, ARGV[1])
redis.call('PEXPIRE', KEYS[1], 2 * window)
return 0
"""


def over_limit(pref, nid, at_ms):
    """True if the user already had max_per_minute deliveries in the minute up to `at_ms`."""
    over = get_redis().eval(RATE_SCRIPT, 1, keys.delivery_rate(pref.user_id), str(nid), at_ms,
                            RATE_WINDOW_MS, pref.max_per_minute)
    return bool(over)
