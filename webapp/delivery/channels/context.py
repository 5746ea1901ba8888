"""What every channel's message draws on: the notification as the templates see it."""

import time
from email.utils import parsedate_to_datetime

from flask import current_app

from webapp import clock
from webapp.notify import types as notification_types
from webapp.preferences import service as preferences


def describe(notification, pref=None):
    """Template context shared by the channels; times in the zone of `pref` (UTC without)."""
    kind = notification_types.get(notification["type"])
    created = clock.ms_to_datetime(notification["created_at"])
    zone = preferences.zone(pref) if pref is not None else None
    shown = created.strftime("%Y-%m-%d %H:%M UTC")
    if zone is not None and zone.key != "UTC":  # "+04" or "IST" alone could be anywhere
        shown = created.astimezone(zone).strftime(f"%Y-%m-%d %H:%M %Z ({zone.key})")
    return {"n": notification, "label": kind.label if kind else notification["type"],
            "critical": notification_types.is_critical(notification),
            "created": shown,
            "base_url": current_app.config["PUBLIC_URL"]}


def one_line(text):
    return " ".join(str(text).split())


def retry_after_s(value):
    """Seconds an HTTP Retry-After asks for (seconds, or a date), or None when it says none."""
    value = (value or "").strip()
    if value.isascii() and value.isdigit():
        return int(value[:7])
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0, int(when.timestamp() - time.time())) if when.tzinfo else None
