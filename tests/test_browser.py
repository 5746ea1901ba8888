"""A real Chromium against gunicorn: register, alert, tick from the fake Binance feed, live feed.

Chromium is Debian's (/usr/bin/chromium; `make browser` installs it). Without it these
tests skip, loudly.
"""

import threading
from contextlib import ExitStack

import pytest
import redis
import requests

from devtools.fakefeed import FakeFeed
from tests.hub import poll
from tests.live_server import launch_chromium, skip_without_chromium
from webapp.alerts import service as alerts
from webapp.extensions import db
from worker.listener.connection import Listener
from worker.listener.pacing import Backoff
from worker.matcher import Matcher

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
WAIT_MS = 15_000

skip_without_chromium()

from playwright.sync_api import expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def site(make_live_site):
    """A site of its own (a test stops its server), the fake Binance feed, and the listener
    with the real matcher."""
    live = make_live_site("browser")
    with ExitStack() as cleanup:
        feed = FakeFeed().start()
        cleanup.callback(feed.stop)
        r = redis.Redis.from_url(live.redis["url"], decode_responses=True)
        cleanup.callback(r.close)
        listener = Listener(r, Matcher(r), feed.url, poll_s=0.05, heartbeat_s=0.2,
                            recv_timeout_s=0.05, backoff=Backoff(0.05, 0.2))
        thread = threading.Thread(target=listener.run, daemon=True)
        thread.start()
        cleanup.callback(thread.join, 5)
        cleanup.callback(listener.stop.set)
        yield {"app": live.app, "server": live.server, "feed": feed, "redis": r}


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        chromium = launch_chromium(p)
        yield chromium
        chromium.close()


def register(browser, site, email):
    page = browser.new_context().new_page()
    page.goto(site["server"].url + "/auth/register")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.fill("#confirm", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/auth/login")  # signing up does not sign in: log in next
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard")
    return page


def log_out_and_in(page, site, email):
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url("**/auth/login**")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard")


def streams_open(site):
    return requests.get(site["server"].url + "/api/v1/health", timeout=5).json()["streams"]


def badge_count(page):
    return int(page.get_attribute("#unread-badge", "data-count") or 0)


def fire(site, price):
    """A trade on the fake Binance feed once the listener follows BTCUSDT."""
    assert site["feed"].wait_for_subscription("btcusdt@aggTrade", timeout=10)
    site["feed"].trade("BTCUSDT", price)


def feed_items(page, text):
    return page.locator("#feed li.note", has_text=text)


def test_live_feed_end_to_end(browser, site):
    alice = register(browser, site, "alice@example.com")
    log_out_and_in(alice, site, "alice@example.com")
    bob = register(browser, site, "bob@example.com")
    alice.goto(site["server"].url + "/alerts/")
    alice.fill("#symbol", "BTCUSDT")
    alice.select_option("#type", "above")
    alice.fill("#price", "65000")
    alice.click("#alert-form button[type=submit]")
    expect(alice.locator("#alert-rows")).to_contain_text("BTCUSDT", timeout=WAIT_MS)
    alice.goto(site["server"].url + "/dashboard")
    expect(alice.locator("#ticker-BTCUSDT")).to_be_visible()
    assert poll(lambda: streams_open(site) == 2, timeout=15)
    alice.evaluate("window.__sameDocument = true")
    before = badge_count(alice)

    fire(site, 65010.5)
    expect(alice.locator("#toasts .toast", has_text="BTCUSDT above 65000")).to_be_visible(
        timeout=WAIT_MS)
    expect(feed_items(alice, "BTCUSDT above 65000")).to_have_count(1, timeout=WAIT_MS)
    expect(alice.locator("#unread-badge")).to_have_attribute("data-count", str(before + 1))
    expect(alice.locator("#ticker-BTCUSDT [data-price]")).to_have_text("65010.5")
    assert alice.evaluate("window.__sameDocument") is True  # no reload happened

    item = feed_items(alice, "BTCUSDT above 65000")
    item.get_by_role("button", name="Mark read").click()
    expect(item).to_have_class("note read prio-normal", timeout=WAIT_MS)
    expect(alice.locator("#unread-badge")).to_have_attribute("data-count", str(before))
    item.get_by_role("button", name="Delete").click()
    expect(feed_items(alice, "BTCUSDT above 65000")).to_have_count(0, timeout=WAIT_MS)

    # Lose the connection, fire while it is gone, and get the missed one back exactly once.
    with site["app"].app_context():
        uid = db.session.execute(db.text("select id from users where email = :e"),
                                 {"e": "alice@example.com"}).scalar()
        alerts.create_alert(uid, {"symbol": "BTCUSDT", "type": "above", "price": 66000})
    site["server"].stop()
    fire(site, 66010)
    site["server"].start()
    expect(feed_items(alice, "BTCUSDT above 66000")).to_have_count(1, timeout=30_000)
    alice.wait_for_timeout(500)  # a duplicate would land right behind the first
    expect(feed_items(alice, "BTCUSDT above 66000")).to_have_count(1)
    assert alice.evaluate("window.__sameDocument") is True

    # Bob's browser never shows Alice's notifications.
    expect(bob.locator("#feed")).not_to_contain_text("BTCUSDT above")
    expect(bob.locator("#toasts")).not_to_contain_text("BTCUSDT above")
    bob.goto(site["server"].url + "/notifications/")
    expect(bob.locator("#notes")).not_to_contain_text("BTCUSDT above")


def test_inbox_page_mark_all_read_and_load_more(browser, site):
    page = register(browser, site, "carol@example.com")
    with site["app"].app_context():
        from webapp.inbox import service as inbox
        uid = db.session.execute(db.text("select id from users where email = :e"),
                                 {"e": "carol@example.com"}).scalar()
        for i in range(25):
            inbox.store({"user_id": uid, "type": "ORDER_EXECUTED", "title": f"fill {i:02d}",
                         "message": "<script>window.__pwned = 1</script>"})
    page.goto(site["server"].url + "/notifications/")
    expect(page.locator("#notes li.note")).to_have_count(20)
    page.get_by_role("button", name="Load more").click()
    expect(page.locator("#notes li.note", has_text="fill")).to_have_count(25, timeout=WAIT_MS)
    page.click("#read-all")
    expect(page.locator("#unread-badge")).to_have_attribute("data-count", "0", timeout=WAIT_MS)
    expect(page.locator("#notes li.note.unread")).to_have_count(0)
    # the list comes back as long as it was: the reader keeps their place
    expect(page.locator("#notes li.note", has_text="fill")).to_have_count(25)
    assert page.evaluate("window.__pwned") is None
