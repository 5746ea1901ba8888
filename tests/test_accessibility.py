"""Every page passes axe-core (no serious or critical violation) at desktop and phone width
(375 px, where nothing may run off the side), in a real Chromium, with the data a user has
after a while: alerts, notifications, keys."""

from pathlib import Path

import pytest

from tests.live_server import launch_chromium, skip_without_chromium
from webapp.accounts import service as accounts
from webapp.alerts import service as alerts
from webapp.core import secretbox
from webapp.extensions import db
from webapp.hooks import service as hooks
from webapp.inbox import service as inbox
from webapp.insist import links
from webapp.insist import service as insist
from webapp.models import DeliveryLog, DeliveryStatus, Destination, StrategyFollow

pytestmark = pytest.mark.browser

skip_without_chromium()

from playwright.sync_api import sync_playwright  # noqa: E402

AXE = (Path(__file__).parent / "vendor" / "axe-4.14.1.min.js").read_text()
WIDTHS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 375, "height": 812}}
VISITOR_PAGES = ["/auth/login", "/auth/register"]
USER_PAGES = ["/dashboard", "/alerts/", "/notifications/", "/settings/notifications/",
              "/settings/destinations/",
              "/deliveries", "/audit", "/digest-preview", "/statement-preview",
              "/settings/api-keys", "/settings/hooks",
              "/settings/password", "/admin/broadcast", "/admin/ops"]


@pytest.fixture(scope="module")
def site(live_site):
    """The shared site, with an admin who has been using it for a while."""
    with live_site.app.app_context():
        user = accounts.create_user("ally@example.com", "correct horse battery", is_admin=True)
        accounts.create_api_key(user, "laptop")
        # what a user may type without a space, as long as each field takes: no page may
        # scroll sideways for it (the key's name also comes back in a notification's title)
        accounts.create_api_key(user, "K" * 80)
        db.session.add_all([
            StrategyFollow(user_id=user.id, strategy_id="s" * 64),
            Destination(user_id=user.id, kind="webhook", name="D" * 80,
                        url_masked="https://hooks.example.com/…",
                        url_encrypted=secretbox.encrypt("https://hooks.example.com/x"),
                        types=["PRICE_ALERT"])])
        inbox.store({"user_id": user.id, "type": "ORDER_EXECUTED", "title": "W" * 200})
        hooks.create(user.id, "TradingView BTC breakouts")
        alerts.create_alert(user.id, {"symbol": "BTCUSDT", "type": "above", "price": 70000,
                                      "note": "breakout"})
        alerts.create_alert(user.id, {"symbol": "ETHUSDT", "type": "volume_above",
                                      "price": 1e6, "mode": "recurring", "buffer": "1%"})
        alerts.create_alert(user.id, {"symbol": "BTCUSDT", "type": "pct_up", "pct": 2.5,
                                      "window": "1h"})
        channel = alerts.create_alert(user.id, {"symbol": "BTCUSDT", "type": "channel_exit",
                                                "low": 60000, "high": 70000})
        inbox.store({"user_id": user.id, "type": "PRICE_ALERT", "title": "BTCUSDT left 60000-70000",
                     "alert_id": channel.id, "data": {"symbol": "BTCUSDT", "price": 59990}})
        bought, _ = (inbox.store({"user_id": user.id, "type": "ORDER_EXECUTED", "title": title,
                                  "message": "details"})[0]
                     for title in ("Bought 0.5 BTC", "Risk limit at 80%"))
        inbox.mark_read(user.id, bought)  # a read item reads as clearly as an unread one
        # alerts that insist: one acknowledged, one waiting, whose emailed link opens a page
        acked, waiting = (inbox.store({"user_id": user.id, "type": "RISK_LIMIT_BREACHED",
                                       "title": title, "message": "over 10x"})[0]
                          for title in ("Leverage 11x", "Leverage 12x"))
        insist.ack(user.id, acked, "link in the email")
        # the deliveries page shows a badge per status: every one of them must read clearly;
        # a relay's Message-ID is long and unbroken, yet the page must not scroll sideways
        db.session.add_all([DeliveryLog(notification_id=waiting, user_id=user.id, round=i,
                                        channel="email", status=status, error="relay said no",
                                        provider_id="<177345678901.4242.9876543210987654321"
                                                    "@relay.tickerbell.example.com>")
                            for i, status in enumerate(DeliveryStatus)])
        db.session.commit()
        VISITOR_PAGES.append(f"/ack/{links.token(waiting, user.id, 'email')}")
        db.session.remove()
    return live_site


def _log_in(page, site):
    page.goto(site.url + "/auth/login")
    page.fill("#email", "ally@example.com")
    page.fill("#password", "correct horse battery")
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard")


def _violations(page):
    page.add_script_tag(content=AXE)
    found = page.evaluate("""async () => {
        const result = await axe.run(document, {resultTypes: ['violations']});
        return result.violations
          .filter(v => v.impact === 'serious' || v.impact === 'critical')
          .map(v => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map(n => n.target.join(' '))
            .join(' | ')}`);
    }""")
    return found


@pytest.mark.parametrize("width", WIDTHS)
def test_every_page_passes_axe_at_desktop_and_phone_width(site, width):
    problems = {}
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context(viewport=WIDTHS[width]).new_page()
        for path in VISITOR_PAGES:
            page.goto(site.url + path)
            problems[path] = _violations(page)
        _log_in(page, site)
        for path in USER_PAGES:
            page.goto(site.url + path)
            page.wait_for_load_state("networkidle")
            problems[path] = _violations(page)
            if page.evaluate("document.documentElement.scrollWidth") > WIDTHS[width]["width"]:
                problems[path].append("wider than the screen: it scrolls sideways")
        browser.close()
    found = {path: found for path, found in problems.items() if found}
    assert not found, "\n".join(f"{path}: {v}" for path, vs in found.items() for v in vs)


def test_the_phone_menu_opens_from_the_keyboard(site):
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context(viewport=WIDTHS["phone"]).new_page()
        _log_in(page, site)
        menu = page.get_by_role("button", name="Menu")
        assert menu.get_attribute("aria-expanded") == "false"
        assert not page.get_by_role("link", name="Alerts").is_visible()
        menu.focus()
        page.keyboard.press("Enter")
        assert menu.get_attribute("aria-expanded") == "true"
        assert page.get_by_role("link", name="Alerts").is_visible()
        page.goto(site.url + "/alerts/")  # tables on phones: each value says what it is
        label = page.evaluate("""() => getComputedStyle(
            document.querySelector('#alert-rows td[data-label]'), '::before').content""")
        assert "Symbol" in label
        browser.close()


def test_a_refused_strategy_follow_is_shown_beside_the_field(site):
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context().new_page()
        _log_in(page, site)
        page.goto(site.url + "/settings/notifications/")
        page.fill("#strategy_id", "no spaces allowed!")
        page.click("#strategies button[type=submit]")
        error = page.locator("#follows .error")
        error.wait_for(timeout=10_000)
        assert error.is_visible() and page.locator("#strategy_id").input_value()
        page.fill("#strategy_id", "momentum-btc")
        page.click("#strategies button[type=submit]")
        page.locator("#follows .chip", has_text="momentum-btc").wait_for(timeout=10_000)
        # the chip may be there already (the site is the module's): wait for the answer itself
        page.locator("#follows .error").wait_for(state="detached", timeout=10_000)
        assert page.locator("#strategy_id").get_attribute("aria-invalid") is None
        browser.close()


@pytest.mark.parametrize("width", WIDTHS)
def test_the_alerts_page_passes_axe_with_its_chart_and_a_row_being_edited(site, width):
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context(viewport=WIDTHS[width]).new_page()
        _log_in(page, site)
        page.goto(site.url + "/alerts/")
        assert page.locator("#alert-rows tr[data-alert-id]").count() >= 4
        chart = page.locator("#alert-chart[data-ready=true]")
        chart.wait_for(timeout=10_000)
        assert int(chart.get_attribute("data-levels")) >= 1
        # nothing runs off the side: a phone scrolls down only
        assert page.evaluate("document.documentElement.scrollWidth") <= WIDTHS[width]["width"]
        row = page.locator("#alert-rows tr[data-kind=channel_exit]")
        alert_id = row.get_attribute("data-alert-id")
        row.get_by_role("link", name="Edit").click()
        page.fill(f"#edit-{alert_id}-high", "1")  # below low: refused beside the field
        page.get_by_role("button", name="Save").click()
        page.locator(f"#edit-{alert_id}-high-error").wait_for(timeout=10_000)
        assert _violations(page) == []
        page.goto(site.url + f"/alerts/{alert_id}/edit")  # the edit page without JavaScript
        assert _violations(page) == []
        browser.close()
