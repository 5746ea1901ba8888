"""Quiet hours and daily digests on the nights the clocks change (23- and 25-hour days).

Every instant here is a fixed UTC time in 2030 (London changes on 31 March and 27 October,
New York on 10 March and 3 November), passed to the code as its clock, so no test depends
on the day it runs.
"""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.hub import make_user, run_jobs
from webapp import clock
from webapp.delivery import digest_email, digests
from webapp.delivery.sweep import sweep
from webapp.extensions import db
from webapp.inbox import service as inbox
from webapp.models import DeliveryLog, DigestRun, User
from webapp.notify import router
from webapp.preferences import service as preferences

pytestmark = pytest.mark.both_databases


def utc(month, day, hour, minute=0):
    return datetime(2030, month, day, hour, minute, tzinfo=UTC)


def held_until(app, uid, when):
    """Route a price alert at `when`; the naive UTC time its email is held until, or None."""
    with app.app_context():
        nid = router.route({"user_id": uid, "type": "PRICE_ALERT", "title": "BTC up"},
                           now_ms=clock.to_ms(when))[0]
    run_jobs(app)
    with app.app_context():
        row = db.session.scalar(db.select(DeliveryLog).filter_by(notification_id=nid))
        return row.next_attempt_at if row.status == "held" else None


# (zone, the day's length, [(routed at, held until or None)]): quiet hours 01:00-03:00 local
QUIET_NIGHTS = [
    ("Europe/London", 23, [  # 01:00 GMT becomes 02:00 BST: one quiet hour
        (utc(3, 31, 0, 59), None),                   # 00:59 GMT
        (utc(3, 31, 1, 0), utc(3, 31, 2, 0)),        # 02:00 BST, until 03:00 BST
        (utc(3, 31, 1, 59), utc(3, 31, 2, 0)),
        (utc(3, 31, 2, 0), None)]),                  # 03:00 BST
    ("Europe/London", 25, [  # 02:00 BST becomes 01:00 GMT: three quiet hours
        (utc(10, 26, 23, 59), None),                 # 00:59 BST
        (utc(10, 27, 0, 0), utc(10, 27, 3, 0)),      # 01:00 BST, until 03:00 GMT
        (utc(10, 27, 1, 30), utc(10, 27, 3, 0)),     # 01:30 GMT, the second time round
        (utc(10, 27, 2, 59), utc(10, 27, 3, 0)),     # 02:59 GMT
        (utc(10, 27, 3, 0), None)]),
    ("America/New_York", 23, [  # 02:00 EST becomes 03:00 EDT: one quiet hour
        (utc(3, 10, 5, 59), None),                   # 00:59 EST
        (utc(3, 10, 6, 0), utc(3, 10, 7, 0)),        # 01:00 EST, until 03:00 EDT
        (utc(3, 10, 6, 59), utc(3, 10, 7, 0)),
        (utc(3, 10, 7, 0), None)]),                  # 03:00 EDT
    ("America/New_York", 25, [  # 02:00 EDT becomes 01:00 EST: three quiet hours
        (utc(11, 3, 4, 59), None),                   # 00:59 EDT
        (utc(11, 3, 5, 0), utc(11, 3, 8, 0)),        # 01:00 EDT, until 03:00 EST
        (utc(11, 3, 6, 30), utc(11, 3, 8, 0)),       # 01:30 EST, the second time round
        (utc(11, 3, 7, 59), utc(11, 3, 8, 0)),       # 02:59 EST
        (utc(11, 3, 8, 0), None)]),
]


@pytest.mark.parametrize("zone, hours, cases", QUIET_NIGHTS,
                         ids=[f"{z.split('/')[1]}-{h}h" for z, h, _ in QUIET_NIGHTS])
def test_quiet_hours_on_the_night_the_clocks_change(app, zone, hours, cases):
    uid = make_user(app, "night@example.com", timezone=zone, quiet_start="01:00",
                    quiet_end="03:00")
    assert [held_until(app, uid, when) for when, _ in cases] == [
        until and until.replace(tzinfo=None) for _, until in cases]
    ends = {until for _, until in cases if until}
    [end] = ends
    with app.app_context():  # released when they end, not an hour early or late
        assert sweep(now=(end - timedelta(minutes=1)).replace(tzinfo=None)) == 0
        assert sweep(now=end.replace(tzinfo=None)) == len(cases) - 2


@pytest.mark.parametrize("zone, quiet_end, routed, released", [
    ("Europe/London", "01:30", utc(3, 31, 0, 50), utc(3, 31, 1, 0)),
    ("America/New_York", "02:30", utc(3, 10, 6, 30), utc(3, 10, 7, 0)),
], ids=["London", "New_York"])
def test_quiet_hours_ending_in_the_skipped_hour_end_when_the_clocks_jump(
        app, zone, quiet_end, routed, released):
    # the local clock never reads the end; it passes it when it jumps an hour forward, and a
    # notification routed after the jump goes at once: the held one must not come later
    uid = make_user(app, "skip@example.com", timezone=zone, quiet_start="23:00",
                    quiet_end=quiet_end)
    assert held_until(app, uid, routed) == released.replace(tzinfo=None)
    assert held_until(app, uid, released + timedelta(minutes=5)) is None


def ticks(first, last, step=timedelta(minutes=15)):
    while first <= last:
        yield first
        first += step


# (zone, the change day, DIGEST_HOUR, when the digests of the day before and of the
# change day itself are sent, in UTC)
DIGEST_NIGHTS = [
    ("Europe/London", date(2030, 3, 31), 8, utc(3, 31, 7), utc(4, 1, 7)),
    ("Europe/London", date(2030, 3, 31), 1, utc(3, 31, 1), utc(4, 1, 0)),  # 01:00 never shows
    ("Europe/London", date(2030, 10, 27), 8, utc(10, 27, 8), utc(10, 28, 8)),
    ("Europe/London", date(2030, 10, 27), 1, utc(10, 27, 0), utc(10, 28, 1)),  # shows twice
    ("America/New_York", date(2030, 3, 10), 8, utc(3, 10, 12), utc(3, 11, 12)),
    ("America/New_York", date(2030, 3, 10), 2, utc(3, 10, 7), utc(3, 11, 6)),
    ("America/New_York", date(2030, 11, 3), 8, utc(11, 3, 13), utc(11, 4, 13)),
    ("America/New_York", date(2030, 11, 3), 2, utc(11, 3, 7), utc(11, 4, 7)),
]


def seed_day(app, uid, zone, day):
    """Two notifications at the very start and end of the local day."""
    tz = ZoneInfo(zone)
    with app.app_context():
        for local in (datetime(day.year, day.month, day.day, 0, 30, tzinfo=tz),
                      datetime(day.year, day.month, day.day, 23, 30, tzinfo=tz)):
            inbox.store({"user_id": uid, "type": "STRATEGY_STATUS", "title": "momo"},
                        now_ms=clock.to_ms(local))


@pytest.mark.parametrize("zone, change, hour, before_sent, change_sent", DIGEST_NIGHTS,
                         ids=[f"{z.split('/')[1]}-{c}-at-{h}" for z, c, h, *_ in DIGEST_NIGHTS])
def test_one_daily_digest_per_local_day_across_the_change(make_app, zone, change, hour,
                                                          before_sent, change_sent):
    app = make_app(DIGEST_HOUR=hour)
    uid = make_user(app, "digest@example.com", timezone=zone, email_weekly_performance=False)
    for offset in (-1, 0, 1):
        seed_day(app, uid, zone, change + timedelta(days=offset))
    claimed = {}  # period start -> the scheduler tick that claimed it
    with app.app_context():
        start = datetime.combine(change - timedelta(days=1), datetime.min.time(), UTC)
        for now in ticks(start, start + timedelta(days=3, minutes=-15)):
            digests.send_due(now)
            for period in db.session.scalars(db.select(DigestRun.period_start)):
                claimed.setdefault(period.date(), now)
    days = sorted(claimed)
    assert days == [days[0] + timedelta(days=i) for i in range(len(days))]  # none skipped
    assert {change - timedelta(days=1), change} <= set(days)
    assert (claimed[change - timedelta(days=1)], claimed[change]) == (before_sent, change_sent)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(DigestRun.id))) == len(days)
        queued = db.session.scalars(db.select(DeliveryLog.notification_id).where(
            DeliveryLog.status == "queued")).all()
        assert sorted(queued) == [digest_email.digest_id("daily", change + timedelta(days=d))
                                  for d in (-1, 0)]  # one email for each day that had news
        user = db.session.get(User, uid)
        pref = preferences.preferences_for(uid)
        # the 23- or 25-hour day holds its own two notifications, its neighbours theirs
        assert [digest_email.build(user, pref, "daily", change + timedelta(days=offset))["total"]
                for offset in (-1, 0, 1)] == [2, 2, 2]
