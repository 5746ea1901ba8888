"""Monthly statements: a month's counts from the durable records, sent on each opted-in
user's local 1st, once per month across re-runs and racing runs, and their preview page."""

import threading
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest

from tests.hub import make_user, run_jobs
from webapp.delivery import statements
from webapp.extensions import db
from webapp.inbox import service as inbox
from webapp.market import price_history
from webapp.models import Alert, DeliveryLog, Destination, DigestRun, StatementEntry
from webapp.notify import router, steps
from webapp.preferences import service as preferences
from worker import jobs

pytestmark = pytest.mark.both_databases
BERLIN = ZoneInfo("Europe/Berlin")  # summer time ends on 27 October 2030
TOKYO = ZoneInfo("Asia/Tokyo")
OCTOBER = date(2030, 10, 1)


def ms(dt):
    return int(dt.timestamp() * 1000)


def utc(*args):
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def app(make_app, smtp_server):
    return make_app(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port, SMTP_TLS="none")


def statement_mails(box, total):
    return [m for m in box.wait_for(total)
            if (m["msg"]["X-Tickerbell-Digest"] or "").startswith("monthly ")]


def notify(uid, ntype, when, title="", **data):
    router.route({"user_id": uid, "type": ntype, "title": title or ntype, "data": data},
                 now_ms=ms(when))


def delivery(uid, channel, status, when):
    db.session.add(DeliveryLog(notification_id=f"n{ms(when)}{channel}{status}", user_id=uid,
                               channel=channel, status=status, created_at=when.replace(
                                   tzinfo=None)))


def seed_berlin_october(app, uid):
    """October 2030 in Berlin runs from 30 Sep 22:00 to 31 Oct 23:00 UTC (summer time ends
    on the 27th): activity just inside and just outside both ends."""
    with app.app_context():
        db.session.add(Alert(user_id=uid, symbol="BTCUSDT", condition="above", target=65000))
        desk = Destination(user_id=uid, kind="webhook", name="Desk <b>bot</b>",
                           url_encrypted="unused here", url_masked="https://example.invalid/")
        db.session.add(desk)
        db.session.commit()
        delivery(uid, desk.channel, "sent", utc(2030, 10, 5))
        notify(uid, "ORDER_EXECUTED", utc(2030, 9, 30, 21, 30))  # 23:30 on 30 Sep: out
        notify(uid, "ORDER_EXECUTED", utc(2030, 9, 30, 22, 30))  # 00:30 on 1 Oct: in
        notify(uid, "PRICE_ALERT", utc(2030, 10, 15, 12), symbol="BTCUSDT", condition="above",
               target=65000, price=65010.5)
        notify(uid, "VOLUME_ALERT", utc(2030, 10, 20, 12), symbol="ETHUSDT",
               condition="volume_above", target=1000000, price=3100)
        notify(uid, "STRATEGY_STATUS", utc(2030, 10, 31, 22, 30))  # 23:30 CET on 31 Oct: in
        notify(uid, "ORDER_EXECUTED", utc(2030, 10, 31, 23, 30))  # 00:30 on 1 Nov: out
        for channel, status, when in (
                ("email", "sent", utc(2030, 9, 30, 22, 30)), ("email", "sent", utc(2030, 10, 9)),
                ("email", "failed", utc(2030, 10, 31, 22, 59)), ("push", "retrying",
                                                                utc(2030, 10, 3)),
                ("dest:999999", "failed", utc(2030, 10, 4)),
                ("email", "sent", utc(2030, 9, 30, 21, 59)), ("sms", "sent", utc(2030, 11, 1))):
            delivery(uid, channel, status, when)
        db.session.commit()
        price_history.record("BTCUSDT", 60000.0, ms(utc(2030, 9, 30, 22)))
        price_history.record("BTCUSDT", 61000.0, ms(utc(2030, 11, 1)))  # after the month
        price_history.record("BTCUSDT", 66000.0, ms(utc(2030, 10, 31, 22)))
    run_jobs(app)  # the router's slow steps write the statement entries


def test_statement_counts_the_local_month_across_a_dst_change(app, smtp_server):
    uid = make_user(app, "berlin@example.com", timezone="Europe/Berlin",
                    email_monthly_statements="on", email_daily_summary=False,
                    email_weekly_performance=False)
    seed_berlin_october(app, uid)
    before = len(smtp_server.messages)
    with app.app_context():
        jobs.prune_redis(now_ms=ms(utc(2030, 11, 9)))  # the inbox keeps 7 days: all gone
        assert inbox.between(uid, 0, ms(utc(2031, 1, 1)), 10) == []
        assert len(statements.send_due(datetime(2030, 11, 1, 8, tzinfo=BERLIN))) == 1
    run_jobs(app)
    [mail] = statement_mails(smtp_server, before + 1)
    msg = mail["msg"]
    assert mail["rcpt"] == ["berlin@example.com"]
    assert msg["Subject"] == "Tickerbell monthly statement: October 2030"
    assert msg["X-Tickerbell-Digest"] == "monthly 2030-10-01"
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "2030-10-01 to 2030-10-31, Europe/Berlin" in text
    assert "Notifications: 4\n" in text
    for line in ("Order executed: 1", "Price alert: 1", "Volume alert: 1", "Strategy status: 1"):
        assert f"  {line}\n" in text
    assert "Alerts that fired: 2\n" in text
    assert "  - 15 Oct 14:00 BTCUSDT above 65000: traded at 65010.5\n" in text
    assert "  - 20 Oct 14:00 ETHUSDT volume_above 1000000: traded at 3100\n" in text
    assert "  Email: 3 (2 sent, 1 failed)\n" in text
    assert "  Push: 1 (1 being retried)\n" in text
    assert "  A destination since removed: 1 (1 failed)\n" in text
    assert "  Desk <b>bot</b>: 1 (1 sent)\n" in text
    assert "SMS" not in text  # its one delivery was on 1 November
    assert "  - BTCUSDT: 60000.0 -> 66000.0 (+10.00%)\n" in text
    html = msg.get_body(("html",)).get_content()
    assert "65010.5" in html and "+10.00%" in html and "2 sent, 1 failed" in html
    assert "Desk &lt;b&gt;bot&lt;/b&gt;" in html and "<b>bot" not in html
    assert 'href="http' in html.split("notification settings")[0][-200:]  # footer link


def test_only_opted_in_users_get_one(app, smtp_server):
    uid = make_user(app, "off@example.com", timezone="Europe/Berlin",
                    email_daily_summary=False, email_weekly_performance=False)
    seed_berlin_october(app, uid)
    with app.app_context():
        assert not preferences.preferences_for(uid).email_monthly_statements  # the default
        assert statements.send_due(datetime(2030, 11, 1, 9, tzinfo=BERLIN)) == []
        assert db.session.scalar(db.select(db.func.count(DigestRun.id))) == 0
        preferences.update(uid, {"email_monthly_statements": "on"})
        assert len(statements.send_due(datetime(2030, 11, 1, 9, tzinfo=BERLIN))) == 1


def test_sent_on_each_users_local_first_in_two_zones(app):
    berlin = make_user(app, "b@example.com", timezone="Europe/Berlin",
                       email_monthly_statements="on")
    tokyo = make_user(app, "t@example.com", timezone="Asia/Tokyo", email_monthly_statements="on")
    with app.app_context():
        for uid in (berlin, tokyo):
            notify(uid, "ORDER_EXECUTED", utc(2030, 10, 10))
    run_jobs(app)

    def sent_to(now):
        with app.app_context():
            return {db.session.get(DeliveryLog, i).user_id for i in statements.send_due(now)}

    assert sent_to(utc(2030, 10, 31, 22, 59)) == set()  # 07:59 on 1 Nov in Tokyo
    assert sent_to(utc(2030, 10, 31, 23)) == {tokyo}  # 08:00 in Tokyo, midnight in Berlin
    # 08:00 in Berlin is 07:00 UTC now that summer time has ended, not 06:00
    assert sent_to(utc(2030, 11, 1, 6, 59)) == set()
    assert sent_to(utc(2030, 11, 1, 7)) == {berlin}
    assert sent_to(utc(2030, 11, 2, 7)) == set()
    with app.app_context():
        runs = db.session.scalars(db.select(DigestRun).where(DigestRun.kind == "monthly")).all()
        assert sorted((r.user_id, r.period_start.date()) for r in runs) == [
            (berlin, OCTOBER), (tokyo, OCTOBER)]


@pytest.mark.parametrize(("local", "due"), [
    (datetime(2030, 11, 1, 7, 59), None),
    (datetime(2030, 11, 1, 8), OCTOBER),
    (datetime(2030, 11, 3, 23, 59), OCTOBER),  # a scheduler down on the 1st catches up
    (datetime(2030, 11, 4), None),  # switched on mid-month: last month's is not sent
    (datetime(2031, 1, 1, 8), date(2030, 12, 1)),
    (datetime(2031, 3, 1, 8), date(2031, 2, 1)),
])
def test_due_from_the_send_hour_of_the_first_for_three_days(app, local, due):
    uid = make_user(app, "due@example.com", timezone="Europe/Berlin")
    with app.app_context():
        pref = preferences.preferences_for(uid)
        assert statements.due_month(pref, local.replace(tzinfo=BERLIN)) == due


def test_quiet_month_is_recorded_as_skipped_and_sends_nothing(app):
    make_user(app, "quiet@example.com", email_monthly_statements="on")
    with app.app_context():
        assert statements.send_due(utc(2030, 11, 1, 9)) == []
        assert db.session.scalars(db.select(DeliveryLog.status)).all() == ["skipped"]
        assert statements.send_due(utc(2030, 11, 1, 10)) == []
        assert db.session.scalar(db.select(db.func.count(DigestRun.id))) == 1


def test_racing_runs_and_a_rerun_send_one_email(app, smtp_server):
    uid = make_user(app, "race@example.com", timezone="Asia/Tokyo",
                    email_monthly_statements="on", email_daily_summary=False,
                    email_weekly_performance=False, email_alerts=False)
    with app.app_context():
        notify(uid, "STRATEGY_STATUS", datetime(2030, 10, 10, tzinfo=TOKYO))
    run_jobs(app)
    now = datetime(2030, 11, 1, 9, tzinfo=TOKYO)
    start, queued, errors = threading.Barrier(2), [], []

    def run():
        try:
            with app.app_context():
                start.wait(timeout=10)
                queued.extend(statements.send_due(now))
                db.session.remove()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == [] and len(queued) == 1
    with app.app_context():
        assert statements.send_due(now + timedelta(hours=1)) == []  # the next tick
    run_jobs(app)
    assert len(statement_mails(smtp_server, 1)) == 1
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(DigestRun.id))) == 1
        assert db.session.get(DeliveryLog, queued[0]).status == "sent"


def test_entries_are_written_once_however_often_the_slow_steps_run(app):
    uid = make_user(app, "once@example.com")
    with app.app_context():
        notification = {"id": "1900000000000-0", "user_id": uid, "type": "PRICE_ALERT",
                        "title": "BTC up", "created_at": 1_900_000_000_000,
                        "data": {"symbol": "BTCUSDT", "price": 1.5, "other": "dropped"}}
        steps.process_many([notification])
        steps.process_many([notification])
        [entry] = db.session.scalars(db.select(StatementEntry)).all()
        assert (entry.user_id, entry.type) == (uid, "PRICE_ALERT")
        assert entry.data == {"symbol": "BTCUSDT", "price": 1.5, "title": "BTC up"}


def test_cleanup_keeps_a_statements_month_of_entries_and_deliveries(app):
    uid = make_user(app, "keep@example.com")
    now = utc(2030, 11, 3, 12)
    with app.app_context():
        for days in (34, 36):
            when = now - timedelta(days=days)
            steps.process_many([{"id": f"{ms(when)}-0", "user_id": uid, "type": "SYSTEM_ERROR",
                                  "title": "x", "created_at": ms(when)}])
            delivery(uid, "email", "sent", when)
            db.session.execute(db.update(DeliveryLog).where(DeliveryLog.created_at == when.replace(
                tzinfo=None)).values(updated_at=when.replace(tzinfo=None)))
        db.session.commit()
        pruned = jobs.prune_sql(now=now.replace(tzinfo=None))
        assert (pruned["statement_entries"], pruned["deliveries"]) == (1, 1)
        kept = db.session.scalars(db.select(StatementEntry.created_at)).all()
        assert kept == [(now - timedelta(days=34)).replace(tzinfo=None)]


# The preview page


def page_of(client):
    return client.get("/statement-preview").get_data(as_text=True)


def test_preview_needs_a_login(client):
    response = client.get("/statement-preview")
    assert response.status_code == 302 and "/auth/login" in response.headers["Location"]


def test_preview_shows_this_months_own_data_escaped(app, client, auth):
    mine = auth.create()
    other = auth.create("other@example.com")
    with app.app_context():
        notify(mine, "PRICE_ALERT", datetime.now(UTC), symbol="<script>alert(1)</script>",
               price=42.5)
        notify(other, "PRICE_ALERT", datetime.now(UTC), symbol="SECRETUSDT", price=7)
    run_jobs(app)
    auth.login()
    page = page_of(client)
    month = datetime.now(UTC).strftime("%B %Y")
    assert f"Tickerbell monthly statement: {month}" in page
    assert "Alerts that fired: 1" in page and "42.5" in page
    assert "SECRETUSDT" not in page
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the plain-text version
    assert "they are off" in page


class Structure(HTMLParser):
    """Checks what a browser-free look can: tags close in order, headings, labelled frames."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
            "source", "track", "wbr"}

    def __init__(self):
        super().__init__()
        self.open, self.problems, self.seen = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.seen.append((tag, attrs))
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if not self.open or self.open[-1] != tag:
            self.problems.append(f"</{tag}> closes <{self.open[-1] if self.open else None}>")
        else:
            self.open.pop()


def test_preview_page_html_is_well_formed_and_labelled(app, client, auth):
    auth.create()
    auth.login()
    parser = Structure()
    parser.feed(page_of(client))
    assert parser.problems == [] and parser.open == []
    tags = [tag for tag, _ in parser.seen]
    assert tags.count("h1") == 1 and "main" in tags
    assert dict(parser.seen)["html"].get("lang") == "en"
    [frame] = [attrs for tag, attrs in parser.seen if tag == "iframe"]
    assert frame["title"] and "sandbox" in frame
    email_html = Structure()
    email_html.feed(frame["srcdoc"])
    assert email_html.problems == [] and email_html.open == []
    links = [attrs["href"] for tag, attrs in parser.seen if tag == "a"]
    assert "/settings/notifications/" in links or any("settings" in h for h in links)
    assert "/digest-preview" in links


def test_preview_is_linked_from_the_settings_and_the_digest_preview(app, client, auth):
    auth.create()
    auth.login()
    assert 'href="/statement-preview"' in client.get("/settings/notifications/").get_data(
        as_text=True)
    assert 'href="/statement-preview"' in client.get("/digest-preview").get_data(as_text=True)
