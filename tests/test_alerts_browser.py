"""The alerts page in a real Chromium: inline create, errors beside fields, pause, delete."""


import pytest

from tests.live_server import launch_chromium, skip_without_chromium
from webapp.extensions import db
from webapp.models import User
from webapp.notify import router

pytestmark = pytest.mark.browser

WAIT_MS = 15_000

skip_without_chromium()

from playwright.sync_api import expect, sync_playwright  # noqa: E402


@pytest.fixture
def page(live_site):
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context().new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # the delete confirmation
        page.errors = []  # the page's uncaught script errors: every test expects none
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.on("console", lambda m: m.type == "error" and "htmx" in m.text
                and page.errors.append(m.text))  # htmx's own, e.g. oobErrorNoTarget
        page.goto(live_site.url + "/auth/register")
        page.fill("#email", "pat@example.com")
        page.fill("#password", "correct horse battery")
        page.fill("#confirm", "correct horse battery")
        page.click("button[type=submit]")
        page.wait_for_url("**/auth/login")  # signing up does not sign in: log in next
        page.fill("#email", "pat@example.com")
        page.fill("#password", "correct horse battery")
        page.click("button[type=submit]")
        page.wait_for_url("**/dashboard")
        yield page
        browser.close()


def test_alerts_page_inline_flow(page, live_site):
    page.goto(live_site.url + "/alerts/")
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#alerts-empty")).to_be_visible()

    page.fill("#symbol", "B")
    page.fill("#price", "-1")
    page.click("#alert-form button[type=submit]")
    expect(page.locator("#symbol-error")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#price-error")).to_contain_text("above 0")
    expect(page.locator("#symbol")).to_be_focused()  # the first field in error
    expect(page.locator("#flashes .flash-error")).to_have_count(0)

    page.fill("#symbol", "ethusdt")
    page.fill("#price", "2500")
    page.fill("#note", "<b>not bold</b>")
    page.click("#alert-form button[type=submit]")
    row = page.locator("#alert-rows tr", has_text="ETHUSDT")
    expect(row).to_have_count(1, timeout=WAIT_MS)
    expect(row).to_contain_text("<b>not bold</b>")
    expect(page.locator("#alerts-empty")).to_have_count(0)
    expect(page.locator("#symbol-error")).to_have_count(0)
    expect(page.locator("#symbol")).to_have_value("")

    row.get_by_role("button", name="Pause").click()
    expect(row).to_contain_text("paused", timeout=WAIT_MS)
    row.get_by_role("button", name="Resume").click()
    expect(row).to_contain_text("active", timeout=WAIT_MS)
    row.get_by_role("button", name="Delete").click()
    expect(page.locator("#alert-rows tr", has_text="ETHUSDT")).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator("#alerts-empty")).to_be_visible()  # the last one gone: said so again

    # the second time round: the first alert again takes the empty row's place
    page.fill("#symbol", "solusdt")
    page.fill("#price", "150")
    page.click("#alert-form button[type=submit]")
    expect(page.locator("#alert-rows tr", has_text="SOLUSDT")).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#alerts-empty")).to_have_count(0)
    assert page.evaluate("window.__sameDocument") is True  # all without a reload

    # the live feed's swaps (a toast) on this page too, and no script fails on any of them
    with live_site.app.app_context():
        uid = db.session.scalar(db.select(User.id).where(User.email == "pat@example.com"))
        router.route({"user_id": uid, "type": "SYSTEM_MAINTENANCE", "title": "Upgrade at 02:00"})
    expect(page.locator(".toast", has_text="Upgrade at 02:00")).to_be_visible(timeout=WAIT_MS)
    assert page.errors == []


def test_an_alert_deleted_in_another_tab_goes_when_this_one_uses_it(page, live_site):
    """Save, Pause or Duplicate on an alert deleted elsewhere answered 404 beside a row that
    stayed, and each click added one more copy of the message. Twice in a row."""
    from webapp.alerts import service as alerts

    with live_site.app.app_context():
        uid = db.session.scalar(db.select(User.id).where(User.email == "pat@example.com"))
        made = [alerts.create_alert(uid, {"symbol": "BTCUSDT", "type": "above", "price": p}).id
                for p in (70000, 71000, 72000, 73000)]
    page.goto(live_site.url + "/alerts/")
    page.evaluate("window.__sameDocument = true")
    for gone, delete in ((made[0], made[1]), (made[2], made[3])):
        for alert_id in (gone, delete):
            expect(page.locator(f"#alert-{alert_id}")).to_be_visible()
        with live_site.app.app_context():
            for alert_id in (gone, delete):
                alerts.delete_alert(uid, alert_id)  # in another tab
        page.locator(f"#alert-{gone}").get_by_role("button", name="Pause").click()
        expect(page.locator(f"#alert-{gone}")).to_have_count(0, timeout=WAIT_MS)
        page.locator(f"#alert-{delete}").get_by_role("button", name="Delete").click()
        expect(page.locator(f"#alert-{delete}")).to_have_count(0, timeout=WAIT_MS)
        expect(page.locator("#flashes .flash-error")).to_have_text(
            ["That alert was deleted meanwhile, perhaps in another tab."])
    assert page.evaluate("window.__sameDocument") is True
    page.errors.clear()  # htmx logs each 404 it was answered: expected here
