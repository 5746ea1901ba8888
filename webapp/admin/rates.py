"""Delivery success rates per channel over time, for the operations page's charts.

One grouped query per window: the delivery log's tried rows counted by channel, outcome and
time slot (the slot worked out in SQL, so a busy day is never read row by row). Tried: finished
(sent or failed), or failing, that is retrying after a failed attempt, so a provider refusing
now shows now, not only once its deliveries give up hours later (one that goes through on a
later try moves to that try's slot, as sent). One the breaker held back unattempted is not
tried: it is waiting.
"""

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Integer, and_, cast, func, or_, select

from webapp import clock
from webapp.delivery.channels import CHANNELS
from webapp.delivery.channels.destination import PREFIX as DESTINATION
from webapp.extensions import db
from webapp.models import DeliveryLog, DeliveryStatus

OK = (DeliveryStatus.SENT, DeliveryStatus.OUTBOX)  # handed over (or kept, unconfigured)
FAILED = (DeliveryStatus.FAILED, DeliveryStatus.RETRYING)  # RETRYING: once attempted
# due and not out yet: a provider that refuses (a breaker open defers them) piles these up
WAITING = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.RETRYING)
EPOCH = clock.ms_to_sql(0)
TRIED = or_(DeliveryLog.status.in_((*OK, DeliveryStatus.FAILED)),
            and_(DeliveryLog.status == DeliveryStatus.RETRYING, DeliveryLog.attempts > 0))


@dataclass(frozen=True)
class Window:
    name: str
    span: timedelta
    slot: timedelta

    @property
    def slots(self):
        return int(self.span / self.slot)


HOUR = Window("hour", timedelta(hours=1), timedelta(minutes=5))
DAY = Window("day", timedelta(days=1), timedelta(hours=1))
WINDOWS = (HOUR, DAY)


def _seconds(column):
    """Whole seconds since 1970 of a naive UTC column, in the backend's own words."""
    if db.engine.dialect.name == "postgresql":
        return cast(func.floor(func.extract("epoch", column)), Integer)
    return cast(func.strftime("%s", column), Integer)


def _start(window, now):
    """The first slot's start: slots end on a slot boundary, the last one holding now."""
    size = int(window.slot.total_seconds())
    now_s = int((now - EPOCH).total_seconds())
    return EPOCH + timedelta(seconds=(now_s // size + 1) * size) - window.span


def channel_group(channel):
    """Each user's destinations count as one line: the page is about providers."""
    return "destinations" if channel.startswith(DESTINATION) else channel


def success_rates(window, now=None, also=()):
    """{channel: [{start, ok, failed, rate}] one per slot, oldest first}; rate is None in a
    slot where nothing was tried. Built-in channels are always listed, and those in `also`."""
    start = _start(window, now or clock.utcnow())
    size = int(window.slot.total_seconds())
    slot = (_seconds(DeliveryLog.updated_at) - int((start - EPOCH).total_seconds())) // size
    query = (select(DeliveryLog.channel, DeliveryLog.status, slot, func.count())
             .where(DeliveryLog.updated_at >= start, TRIED)
             .group_by(DeliveryLog.channel, DeliveryLog.status, slot))
    table = {channel: _empty(window, start) for channel in (*CHANNELS, *also)}
    for channel, status, index, n in db.session.execute(query):
        if not 0 <= index < window.slots:
            continue  # written a moment after `now` was read
        cell = table.setdefault(channel_group(channel), _empty(window, start))[index]
        cell["ok" if status in OK else "failed"] += n
    for slots in table.values():
        for cell in slots:
            done = cell["ok"] + cell["failed"]
            cell["rate"] = cell["ok"] / done if done else None
    return table


def _empty(window, start):
    return [{"start": start + window.slot * i, "ok": 0, "failed": 0}
            for i in range(window.slots)]


def overall(slots):
    """(rate or None, tried: the `finished` of the facts) over a channel's slots."""
    ok = sum(cell["ok"] for cell in slots)
    done = ok + sum(cell["failed"] for cell in slots)
    return (ok / done if done else None), done


def percent(rate):
    """A success rate as an operator reads it: 100 % only when nothing failed and 0 % only when
    nothing went (1 failure in 395 is 99.7 %, not a rounded 100 %)."""
    if rate is None:
        return "nothing tried"
    shown = rate * 100
    if 0 < rate < 1:
        shown = min(max(shown, 0.1), 99.9)
    return f"{shown:.1f}".removesuffix(".0") + "%"


def waiting(now=None, window=DAY):
    """{channel: deliveries due and not out yet} among those touched within the window."""
    start = (now or clock.utcnow()) - window.span
    query = (select(DeliveryLog.channel, func.count())
             .where(DeliveryLog.updated_at >= start, DeliveryLog.status.in_(WAITING))
             .group_by(DeliveryLog.channel))
    found = dict.fromkeys(CHANNELS, 0)
    for channel, n in db.session.execute(query):
        found[channel_group(channel)] = found.get(channel_group(channel), 0) + n
    return found
