"""Alerts that insist: a notification of a type the user marked repeats on its external
channels, climbing a ladder (push, then the escalation destinations, then SMS), until it is
acknowledged, runs out of rounds or expires.

One Escalation row per notification holds where it stands; each round is DeliveryLog rows
with that round, written once (the unique key) and sent by the usual delivery job.
"""

import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update

from webapp import clock
from webapp.core import database, logs
from webapp.core.queues import enqueue
from webapp.delivery import audit, dispatch
from webapp.errors import REDIS_FAULTS
from webapp.exceptions import NotFound
from webapp.extensions import db
from webapp.inbox import service as inbox
from webapp.insist.rules import insisting_types, user_types
from webapp.models import (
    DeliveryLog,
    DeliveryStatus,
    Destination,
    Escalation,
    PushSubscription,
)
from webapp.notify import types as notification_types
from webapp.preferences import service as preferences

log = logging.getLogger(__name__)

DEFAULT_LIFETIME = timedelta(days=inbox.DEFAULT_TTL_MS // 1000 // 86400)  # the inbox's retention
DEFAULT_LIMIT = 500  # escalations a run advances; the next run takes the rest
ACKNOWLEDGED, EXHAUSTED, EXPIRED, DELETED = "acknowledged", "exhausted", "expired", "deleted"
SWITCHED_OFF = "switched_off"  # its user took its type off the types that insist
PUSH_FROM, DESTINATIONS_FROM, SMS_FROM = 1, 2, 3  # the ladder: the round each step joins
WAITING = (DeliveryStatus.QUEUED, DeliveryStatus.RETRYING)  # a reminder not sent (yet)


class NotInsisting(Exception):
    """The notification's type does not insist for its user: nothing to acknowledge."""


def _new_row(n, pref, **extra):
    created = clock.ms_to_sql(n["created_at"])
    every = max(int(pref.insist_every_min), 1) * 60
    return {"notification_id": str(n["id"]), "user_id": int(n["user_id"]), "type": n["type"],
            "title": str(n.get("title", ""))[:200], "rounds": 0,
            "max_rounds": max(int(pref.insist_rounds), 0), "every_s": every,
            "next_at": created + timedelta(seconds=every),
            "expires_at": created + DEFAULT_LIFETIME, "ended": "", "acked_by": "",
            "created_at": created, "channels": None, **extra}


def start(notifications, recipients, chosen=None):
    """Begin insisting for each notification whose type insists for its user (once per id).
    `chosen`: {alert id: the channels it names}, which bound every round."""
    rows, chosen = [], chosen or {}
    for n in notifications:
        recipient = recipients.get(int(n["user_id"]))
        if recipient is not None and n.get("type") in insisting_types(recipient.pref):
            rows.append(_new_row(n, recipient.pref,
                                 channels=chosen.get(str(n.get("alert_id") or ""))))
    if rows:
        database.insert_ignore(Escalation, rows)


def due(now=None, limit=DEFAULT_LIMIT):
    """The escalations due by `now`, the oldest due first."""
    return db.session.scalars(select(Escalation).where(
        Escalation.next_at <= (now or clock.utcnow()), Escalation.ended == "")
        .order_by(Escalation.next_at).limit(limit)).all()


def run_due(now=None):
    """Periodic job: end or advance every escalation due; returns the delivery jobs queued."""
    now = now or clock.utcnow()
    return sum(advance(esc, now) for esc in due(now))


@dataclass(frozen=True)
class Seen:
    """An escalation as one run read it: what its claim compares (commits reload the row)."""

    notification_id: str
    user_id: int
    type: str
    rounds: int
    max_rounds: int
    every_s: int
    next_at: object
    expires_at: object
    ended: str
    channels: list | None

    @classmethod
    def of(cls, esc):
        return cls(*(getattr(esc, name) for name in cls.__dataclass_fields__))


def advance(esc, now):
    """One escalation as this run read it: end it, put it off to the end of quiet hours, or
    send its next round. Two runs that read it alike race: the round goes to the one whose
    claim (by round count) lands; the other sends nothing."""
    seen = Seen.of(esc)
    if seen.ended or seen.next_at is None or seen.next_at > now:
        return 0
    if now >= seen.expires_at or seen.rounds >= seen.max_rounds:
        _end(seen, EXPIRED if now >= seen.expires_at else EXHAUSTED)
        return 0
    if not _in_inbox(seen):  # deleted by its user: nothing left to remind of
        _end(seen, DELETED)
        return 0
    pref = preferences.preferences_for(seen.user_id)
    if seen.type not in insisting_types(pref):  # "stop nagging me about these": no more
        _end(seen, SWITCHED_OFF)
        return 0
    quiet = None if seen.type in notification_types.CRITICAL_TYPES else \
        preferences.quiet_until(pref, clock.ms_to_datetime(clock.to_ms(now)))
    if quiet is not None:  # counted from the end, when the held first delivery goes out:
        # a reminder due then came before what it reminds of
        if _claim(seen, seen.rounds, quiet.replace(tzinfo=None) + timedelta(seconds=seen.every_s)):
            logs.event(log, "insist_quiet", notification_id=seen.notification_id,
                       until=quiet.isoformat())
        return 0
    k = seen.rounds + 1
    log_ids = _write_round(seen, k, ladder(seen, pref, k))
    if not _claim(seen, k, now + timedelta(seconds=seen.every_s)):
        return 0  # another run sent this round
    _overtaken(seen, k)
    for log_id in log_ids:
        enqueue(dispatch.send, log_id, queue="high", job_id=f"delivery-{log_id}")
    logs.event(log, "insist_round", notification_id=seen.notification_id,
               user_id=seen.user_id, round=k, of=seen.max_rounds, channels=len(log_ids))
    return len(log_ids)


def _in_inbox(seen):
    """Whether its notification is still in the inbox; taken so when Redis cannot say (a
    failover): the round goes as it did before this was asked, and the others due too."""
    try:
        inbox.get(seen.user_id, seen.notification_id)
    except NotFound:
        return False
    except REDIS_FAULTS as exc:
        logs.event(log, "insist_inbox_unknown", logging.WARNING,
                   notification_id=seen.notification_id, error=logs.error_text(exc))
    return True


def _claim(seen, rounds, next_at):
    """Move the escalation on, if no other run did since it was read."""
    moved = db.session.execute(update(Escalation).where(
        Escalation.notification_id == seen.notification_id, Escalation.ended == "",
        Escalation.rounds == seen.rounds, Escalation.next_at == seen.next_at)
        .values(rounds=rounds, next_at=next_at)).rowcount
    db.session.commit()
    return moved == 1


def _overtaken(esc, k):
    """Reminders before round k still waiting (retried: a provider greylisting) stay in:
    round k goes on their channels and more (the ladder only climbs), and "Reminder 1" read
    after "Reminder 2" would say less, late."""
    db.session.execute(update(DeliveryLog).where(
        DeliveryLog.notification_id == esc.notification_id, DeliveryLog.user_id == esc.user_id,
        DeliveryLog.round.between(1, k - 1), DeliveryLog.status.in_(WAITING))
        .values(status=DeliveryStatus.SKIPPED, next_attempt_at=None,
                error=f"reminder {k} went out before it could"))
    db.session.commit()


def _end(esc, how):
    db.session.execute(update(Escalation).where(
        Escalation.notification_id == esc.notification_id, Escalation.ended == "")
        .values(ended=how, next_at=None))
    db.session.commit()
    logs.event(log, "insist_ended", notification_id=esc.notification_id,
               user_id=esc.user_id, how=how, rounds=esc.rounds)


def ladder(esc, pref, k):
    """Round k's channels: the first delivery's, then push, destinations and SMS as it climbs."""
    channels = list(db.session.scalars(select(DeliveryLog.channel).where(
        DeliveryLog.notification_id == esc.notification_id,
        DeliveryLog.user_id == esc.user_id, DeliveryLog.round == 0)
        .order_by(DeliveryLog.id)))
    if k >= PUSH_FROM and db.session.scalar(select(PushSubscription.id).where(
            PushSubscription.user_id == esc.user_id).limit(1)) is not None:
        channels.append("push")
    if k >= DESTINATIONS_FROM:  # those marked escalate, whatever types they take at first
        channels += [d.channel for d in db.session.scalars(select(Destination).where(
            Destination.user_id == esc.user_id, Destination.enabled, Destination.escalate)
            .order_by(Destination.id))]
    kind = notification_types.get(esc.type)
    if k >= SMS_FROM and pref.phone and kind is not None and kind.sms_toggle:
        channels.append("sms")  # only types that may go by SMS: a broadcast never pays for one
    if esc.channels is not None:  # its alert's own list bounds it: `[]`, nothing external
        named = {f"dest:{name}" if isinstance(name, int) else name for name in esc.channels}
        channels = [c for c in channels if c in named]
    return list(dict.fromkeys(channels))


def _write_round(esc, k, channels):
    """The round's delivery rows (once each), queued; returns their ids."""
    dispatch.insert_ignore([{"notification_id": esc.notification_id, "user_id": esc.user_id,
                             "channel": channel, "round": k, "status": DeliveryStatus.QUEUED,
                             "next_attempt_at": None, "error": "", "provider_id": "",
                             "attempts": 0} for channel in channels])
    return list(db.session.scalars(select(DeliveryLog.id).where(
        DeliveryLog.notification_id == esc.notification_id, DeliveryLog.user_id == esc.user_id,
        DeliveryLog.round == k, DeliveryLog.status == DeliveryStatus.QUEUED)
        .order_by(DeliveryLog.id)))


def ack(user_id, nid, by, now=None):
    """Acknowledge: the repeats stop. The first acknowledgement is kept; returns the row."""
    now, by = now or clock.utcnow(), str(by)
    if not inbox.NID_RE.fullmatch(str(nid)):
        raise NotFound(nid)
    esc = _own(user_id, nid)
    first = esc is None  # or found not yet acknowledged, below
    if esc is None:
        n = audit.load(str(nid), user_id)
        if n is None or int(n["user_id"]) != user_id:
            raise NotFound(nid)
        pref = preferences.preferences_for(user_id)
        if n.get("type") not in insisting_types(pref):
            raise NotInsisting(f"{n.get('type')} notifications do not ask to be acknowledged.")
        # the slow steps have not run yet: start() will find it already acknowledged
        database.insert_ignore(Escalation, [_new_row(
            n, pref, next_at=None, ended=ACKNOWLEDGED, acked_at=now, acked_by=by[:200])])
        esc = _own(user_id, nid)
    first |= db.session.execute(update(Escalation).where(
        Escalation.notification_id == esc.notification_id, Escalation.acked_at.is_(None))
        .values(acked_at=now, acked_by=by[:200])).rowcount > 0
    db.session.execute(update(Escalation).where(
        Escalation.notification_id == esc.notification_id, Escalation.ended == "")
        .values(ended=ACKNOWLEDGED, next_at=None))
    db.session.execute(update(DeliveryLog).where(  # reminders not out yet stay in
        DeliveryLog.notification_id == esc.notification_id, DeliveryLog.user_id == user_id,
        DeliveryLog.round > 0, DeliveryLog.status.in_(WAITING))
        .values(status=DeliveryStatus.SKIPPED, next_attempt_at=None,
                error="acknowledged before it went out"))
    db.session.commit()
    db.session.refresh(esc)
    if first:  # asked again (a second tab, the toast's item) it is no news
        logs.event(log, "insist_acknowledged", notification_id=nid, user_id=user_id,
                   by=esc.acked_by)
        try:
            inbox.announce_acked(user_id, esc.notification_id, esc.acked_by, iso(esc.acked_at))
        except REDIS_FAULTS as exc:  # the pages show it on their next load
            log.warning("acknowledgement of %s not announced to open pages: %s", nid, exc)
    return esc


def _own(user_id, nid):
    esc = db.session.get(Escalation, str(nid))
    return esc if esc is not None and esc.user_id == user_id else None


def states(user_id, nids):
    """{nid: Escalation} for those of the user's notifications that insisted, in one query."""
    nids = [str(nid) for nid in nids if inbox.NID_RE.fullmatch(str(nid))]
    if not nids:
        return {}
    rows = db.session.scalars(select(Escalation).where(
        Escalation.user_id == user_id, Escalation.notification_id.in_(nids)))
    return {row.notification_id: row for row in rows}


@dataclass(frozen=True)
class Pending:
    """An inbox item of a type that insists whose escalation the slow steps have not written."""

    rounds: int = 0
    ended: str = ""
    acked_at: None = None
    acked_by: str = ""


def marks(user_id, items):
    """{nid: Escalation, or Pending} for a page of the user's notifications that insist."""
    found = states(user_id, [n["id"] for n in items])
    types = user_types(user_id)
    for n in items:
        if n.get("type") in types:
            found.setdefault(str(n["id"]), Pending())
    return found


def recent(user_id, limit=50):
    """The user's escalations, newest first: the audit page's section."""
    return db.session.scalars(select(Escalation).where(Escalation.user_id == user_id)
                              .order_by(Escalation.created_at.desc()).limit(limit)).all()


def iso(dt):
    """A SQL time as the API gives times: ISO 8601 UTC with milliseconds."""
    return None if dt is None else clock.ms_to_iso(clock.to_ms(dt))


def to_api(esc):
    """The API's `insist` object; None for a notification that did not insist."""
    if esc is None:
        return None
    return {"rounds": esc.rounds, "max_rounds": esc.max_rounds, "next_at": iso(esc.next_at),
            "ended": esc.ended or None, "acknowledged_at": iso(esc.acked_at),
            "acknowledged_by": esc.acked_by or None}
