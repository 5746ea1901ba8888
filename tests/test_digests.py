"""Daily and weekly digests: content, local morning, once per period across scheduler runs."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time
from rq_scheduler import Scheduler

from tests.hub import make_user, run_jobs
from webapp import keys
from webapp.core.queues import rq_connection
from webapp.delivery import digests
from webapp.extensions import db, get_redis
from webapp.inbox import service as inbox
from webapp.market import price_history
from webapp.models import Alert, DeliveryLog, DigestRun
from webapp.notify import router
from worker.schedule import PERIODIC, reconcile

pytestmark = pytest.mark.both_databases
TOKYO = ZoneInfo("Asia/Tokyo")


def ms(dt):
    return int(dt.timestamp() * 1000)


@pytest.fixture
def app(make_app, smtp_server):
    return make_app(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port, SMTP_TLS="none")


def digest_mails(box, total):
    return [m["msg"] for m in box.wait_for(total) if m["msg"]["X-Tickerbell-Digest"]]


def seed(app, uid, day):
    """A day of activity for the user, in the user's zone, plus BTC prices around it."""
    start = datetime.combine(day, datetime.min.time(), TOKYO)
    with app.app_context():
        db.session.add(Alert(user_id=uid, symbol="BTCUSDT", condition="above", target=65000))
        db.session.commit()
        inbox.store({"user_id": uid, "type": "PRICE_ALERT", "title": "BTCUSDT above 65000",
                     "data": {"symbol": "BTCUSDT", "condition": "above", "target": 65000,
                              "price": 65010.5}}, now_ms=ms(start + timedelta(hours=9)))
        for second in (10, 11):  # the second one is over the user's limit of 1 a minute
            router.route({"user_id": uid, "type": "ORDER_EXECUTED",
                          "title": f"Filled <script>x</script> {second}"},
                         now_ms=ms(start + timedelta(hours=10, seconds=second)))
        price_history.record("BTCUSDT", 60000.0, ms(start))
        price_history.record("BTCUSDT", 63000.0, ms(start + timedelta(hours=23, minutes=45)))


def test_daily_digest_at_local_morning_once(app, smtp_server):
    uid = make_user(app, "d@example.com", timezone="Asia/Tokyo",
                    email_weekly_performance=False, max_per_minute="1")
    seed(app, uid, datetime(2030, 1, 14).date())
    run_jobs(app)
    with app.app_context():
        assert digests.send_due(datetime(2030, 1, 15, 7, 59, tzinfo=TOKYO)) == []
        assert len(digests.send_due(datetime(2030, 1, 15, 8, 0, tzinfo=TOKYO))) == 1
        assert digests.send_due(datetime(2030, 1, 15, 8, 15, tzinfo=TOKYO)) == []
    run_jobs(app)
    [msg] = digest_mails(smtp_server, 2)  # the first fill went out at once, by email
    assert msg["Subject"] == "Tickerbell daily summary: 2030-01-14"
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = msg.get_body(("html",)).get_content()
    assert "Notifications: 3" in text and "Order executed: 2" in text
    assert "BTCUSDT above 65000: traded at 65010.5" in text
    assert "BTCUSDT: 60000.0 -> 63000.0 (+5.00%)" in text
    assert "Held back by your per-minute limit:\n  - Filled <script>x</script> 11" in text
    assert "+5.00%" in html and "65010.5" in html
    assert "&lt;script&gt;" in html and "<script>" not in html
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(DigestRun.id))) == 1


def test_an_alert_type_posted_without_an_alerts_figures_is_listed_by_its_title(app,
                                                                               smtp_server):
    """A trading system may post a PRICE_ALERT with a title alone: it printed
    "  : traded at" and an empty table row."""
    uid = make_user(app, "t@example.com", timezone="Asia/Tokyo",
                    email_weekly_performance=False)
    seed(app, uid, datetime(2030, 1, 14).date())
    with app.app_context():
        inbox.store({"user_id": uid, "type": "VOLUME_ALERT", "title": "Desk: <b>BTC</b> volume",
                     "data": {"desk": "eu"}},
                    now_ms=ms(datetime(2030, 1, 14, 11, tzinfo=TOKYO)))
        assert len(digests.send_due(datetime(2030, 1, 15, 8, 0, tzinfo=TOKYO))) == 1
    run_jobs(app)
    [msg] = [m for m in digest_mails(smtp_server, 3) if "daily" in m["Subject"]]
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = msg.get_body(("html",)).get_content()
    assert "  - BTCUSDT above 65000: traded at 65010.5\n  - Desk: <b>BTC</b> volume\n" in text
    assert "traded at \n" not in text and ":  traded" not in text
    assert '<td colspan="4">Desk: &lt;b&gt;BTC&lt;/b&gt; volume</td>' in html


def test_quiet_hours_over_the_digest_hour_put_it_off_to_their_end(app, smtp_server):
    uid = make_user(app, "q@example.com", timezone="Asia/Tokyo", email_weekly_performance=False,
                    quiet_start="07:00", quiet_end="09:30")
    seed(app, uid, datetime(2030, 1, 14).date())
    with app.app_context():
        assert digests.send_due(datetime(2030, 1, 15, 8, 0, tzinfo=TOKYO)) == []
        assert digests.send_due(datetime(2030, 1, 15, 9, 15, tzinfo=TOKYO)) == []
        assert len(digests.send_due(datetime(2030, 1, 15, 9, 30, tzinfo=TOKYO))) == 1
        assert digests.send_due(datetime(2030, 1, 15, 9, 45, tzinfo=TOKYO)) == []


@pytest.mark.parametrize("quiet_end", ["01:00", "23:50"])
def test_quiet_hours_to_midnight_or_past_do_not_hold_the_digest_for_good(app, smtp_server,
                                                                         quiet_end):
    """Quiet from 07:00 to past midnight covers all of the day's digest window (08:00 to
    midnight), and to 23:50 leaves it no run of the 15-minute job."""
    uid = make_user(app, "late@example.com", timezone="Asia/Tokyo",
                    email_weekly_performance=False, quiet_start="07:00", quiet_end=quiet_end)
    seed(app, uid, datetime(2030, 1, 14).date())
    with app.app_context():
        assert len(digests.send_due(datetime(2030, 1, 15, 8, 0, tzinfo=TOKYO))) == 1


def test_weekly_digest_covers_the_last_week(app, smtp_server):
    uid = make_user(app, "w@example.com", timezone="Asia/Tokyo", email_daily_summary=False)
    seed(app, uid, datetime(2030, 1, 9).date())  # a Wednesday
    with app.app_context():
        assert digests.send_due(datetime(2030, 1, 14, 7, 0, tzinfo=TOKYO)) == []  # Monday
        assert len(digests.send_due(datetime(2030, 1, 14, 8, 30, tzinfo=TOKYO))) == 1
        assert digests.send_due(datetime(2030, 1, 17, 8, 30, tzinfo=TOKYO)) == []
    run_jobs(app)
    [msg] = digest_mails(smtp_server, 3)  # two fills by email as they happened, one digest
    assert msg["Subject"] == "Tickerbell weekly performance: 2030-01-07 to 2030-01-13"


def test_quiet_period_sends_nothing_but_is_recorded(app, smtp_server):
    make_user(app, "quiet@example.com")
    with app.app_context():
        assert digests.send_due(datetime(2030, 1, 15, 9, 0, tzinfo=UTC)) == []
        assert db.session.scalar(db.select(db.func.count(DigestRun.id))) == 2
        assert set(db.session.scalars(db.select(DeliveryLog.status))) == {"skipped"}


def test_two_scheduler_runs_one_digest_and_no_duplicate_jobs(make_app, smtp_server):
    app = make_app(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port, SMTP_TLS="none",
                   DIGEST_HOUR=0)
    uid = make_user(app, "s@example.com", email_weekly_performance=False)
    with app.app_context():
        inbox.store({"user_id": uid, "type": "STRATEGY_STATUS", "title": "momo resumed"},
                    now_ms=ms(datetime(2030, 1, 14, 12, tzinfo=UTC)))
    # the scheduled digest job reads the clock: a fixed morning, so no run crosses midnight
    with freeze_time("2030-01-15 09:00:00", tick=True):
        for _ in range(2):  # each start: reconcile, queue what is due, run the worker
            with app.app_context():
                scheduler = Scheduler(queue_name="default", connection=rq_connection())
                ids = reconcile(scheduler)
                assert ids == sorted(p.id for p in PERIODIC)
                scheduler.enqueue_jobs()
                digests.send_due()  # the digest job's next tick on the same day
            run_jobs(app)
    [mail] = smtp_server.wait_for(1)
    assert mail["msg"]["Subject"] == "Tickerbell daily summary: 2030-01-14"
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(DigestRun.id))) == 1
        assert len(list(Scheduler(connection=rq_connection()).get_jobs())) == len(PERIODIC)


def test_price_samples_come_from_the_listeners_last_prices(app):
    with app.app_context():
        r = get_redis()
        r.hset("tb:symbols", mapping={"BTCUSDT": 1, "ETHUSDT": 1})
        r.hset(keys.price("BTCUSDT"), mapping={"price": "65000.5", "ts": "1900000000000"})
        assert price_history.sample(now_ms=1_900_000_000_500) == 1  # ETH has no trade yet
        assert price_history.price_at("BTCUSDT", 1_900_000_100_000) == 65000.5


def test_preview_page_shows_the_next_digest(app, client, auth):
    auth.create()
    auth.login()
    page = client.get("/digest-preview?kind=weekly").get_data(as_text=True)
    assert "Weekly performance" in page and "srcdoc=" in page
    assert client.get("/digest-preview?kind=yearly").status_code == 404
