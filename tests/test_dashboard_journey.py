"""The dashboard walked as a user watches it, twice in a row without a reload, in Chromium:
notifications and their toasts arrive live, prices tick (published as the matcher publishes
them) on small charts with a time axis and the 24 h change, one notification is read and
one deleted from the dashboard. After every step the markup is sound and the nav badge says
what the API counts."""

import re
import time

import pytest
import redis

from tests.live_server import skip_without_chromium
from webapp import clock, keys
from webapp.alerts import service as alerts
from webapp.inbox import service as inbox
from webapp.market import price_history
from webapp.market.tickers import DAY_MS

pytestmark = pytest.mark.browser

skip_without_chromium()

from playwright.sync_api import expect  # noqa: E402

from tests.journeys import PASSWORD, WAIT_MS, signed_in, step_done  # noqa: E402

EMAIL = "dashboard-walker@example.com"
SYMBOL = "SOLUSDT"
DAY_AGO = 140.0  # the price history's sample of a day ago


@pytest.fixture
def user(live_site):
    uid = live_site.user(EMAIL, PASSWORD)
    with live_site.app.app_context():  # an alert puts its symbol's price on the dashboard
        alerts.create_alert(uid, {"symbol": SYMBOL, "type": "above", "price": 500})
        price_history.record(SYMBOL, DAY_AGO, clock.now_ms() - DAY_MS - 60_000)
    return uid


def _store(site, uid, ntype, title):
    with site.app.app_context():
        return inbox.store({"user_id": uid, "type": ntype, "title": title,
                            "message": "details"})[0]


def _change(price):
    """The 24 h change the ticker shows against DAY_AGO."""
    return f"{(float(price) / DAY_AGO - 1) * 100:+.2f} % in 24 h"


def _tick(site, price, ts):
    """A price as the matcher's script publishes it (worker/match/): the trade's text."""
    with redis.Redis.from_url(site.app.config["REDIS_URL"]) as r:
        r.publish(keys.ticks_channel(SYMBOL), f'{{"symbol":"{SYMBOL}","price":{price},"ts":{ts}}}')


def _arrives(page, site, uid, ntype, title):
    nid = _store(site, uid, ntype, title)
    expect(page.locator("#feed li.note").first).to_have_id(f"n-{nid}", timeout=WAIT_MS)
    expect(page.locator("#toasts .toast", has_text=title)).to_be_visible()
    step_done(page, site)
    return nid


def _walk(page, site, uid, round_, prices):
    order = _arrives(page, site, uid, "ORDER_EXECUTED", f"{round_}: bought 2 SOL")
    risk = _arrives(page, site, uid, "RISK_LIMIT_BREACHED", f"{round_}: exposure at 90%")
    expect(page.locator("#feed li.empty")).to_be_hidden()

    # the feed is live (the notifications came over it), so ticks reach this page now
    ticker = page.locator(f"#ticker-{SYMBOL}")
    now = int(time.time() * 1000)
    for i, price in enumerate(prices):
        _tick(site, price, now + i * 1000)
        expect(ticker.locator("[data-price]")).to_have_text(price, timeout=WAIT_MS)
    expect(ticker.locator("polyline")).to_have_attribute("points", re.compile(r"\d.* \d"))
    expect(ticker.locator("[data-age]")).to_have_text(re.compile(r"^\d+ s ago$"))
    # the sparkline is a small chart with a time axis, fed by the same ticks
    chart = ticker.locator("[data-mini-chart]")
    expect(chart).to_have_attribute("data-last", prices[-1], timeout=WAIT_MS)
    expect(chart.locator("canvas").first).to_be_visible()
    assert int(chart.get_attribute("data-points")) >= 2
    expect(ticker.locator("svg.spark")).to_be_hidden()
    expect(ticker.locator("[data-change]")).to_have_text(_change(prices[-1]))
    step_done(page, site)

    page.locator(f"#n-{risk}").get_by_role("button", name="Mark read").click()
    expect(page.locator(f"#n-{risk}")).to_have_class(re.compile(r"\bread\b"), timeout=WAIT_MS)
    step_done(page, site)
    page.locator(f"#n-{order}").get_by_role("button", name="Delete").click()
    expect(page.locator(f"#n-{order}")).to_have_count(0, timeout=WAIT_MS)
    step_done(page, site)


def test_the_whole_dashboard_journey_twice_without_a_reload(live_site, user):
    with signed_in(live_site, EMAIL, "/dashboard") as page:
        expect(page.locator(f"#ticker-{SYMBOL} [data-price]")).to_have_text("—")
        expect(page.locator(f"#ticker-{SYMBOL} [data-change]")).to_have_text(
            "24 h change: –")
        step_done(page, live_site)
        _walk(page, live_site, user, "first", ("142.5", "143.75"))
        _walk(page, live_site, user, "second", ("150.75", "149.5"))
