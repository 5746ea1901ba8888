"""In Chromium: the symbol field suggests Binance's symbols as the user types, an unknown
symbol comes back as a field error naming close matches, and an alert accepted before the
list came says it cannot fire; the page still passes axe-core."""

import pytest

from tests.live_server import launch_chromium, skip_without_chromium
from tests.test_accessibility import _violations
from webapp.accounts import service as accounts
from webapp.alerts import service as alerts
from webapp.extensions import db
from webapp.market import symbols

pytestmark = pytest.mark.browser

WAIT_MS = 15_000

skip_without_chromium()

from playwright.sync_api import expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def server(make_live_site):
    """A site of its own: the symbol list it stores is every user's."""
    live = make_live_site("symbols-browser")  # BINANCE_API_URL is "", as when the list was stored
    with live.app.app_context():
        user = accounts.create_user("typist@example.com", "correct horse battery")
        alerts.create_alert(user.id, {"symbol": "FOOBARUSDT", "type": "above", "price": 5})
        symbols.store(["BTCUSDT", "ETHBTC", "ETHUSDC", "ETHUSDT", "SOLUSDT"])
        db.session.remove()
    return live


@pytest.fixture
def page(server):
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context().new_page()
        page.goto(server.url + "/auth/login")
        page.fill("#email", "typist@example.com")
        page.fill("#password", "correct horse battery")
        page.click("button[type=submit]")
        page.wait_for_url("**/dashboard")
        yield page
        browser.close()


def test_typing_a_symbol_fills_the_datalist_and_an_unknown_one_is_refused(page, server):
    page.goto(server.url + "/alerts/")
    page.locator("#symbol").press_sequentially("eth")
    options = page.locator("#symbol-options option")
    expect(options).to_have_count(3, timeout=WAIT_MS)
    assert [o.get_attribute("value") for o in options.all()] == ["ETHUSDT", "ETHUSDC", "ETHBTC"]
    expect(page.locator("#symbol")).to_have_attribute("list", "symbol-options")

    page.fill("#symbol", "ETHUSTD")
    page.fill("#price", "3000")
    page.click("#alert-form button[type=submit]")
    expect(page.locator("#symbol-error")).to_contain_text("Close matches: ETHUSDT, ETHUSDC",
                                                          timeout=WAIT_MS)
    expect(page.locator("#symbol")).to_have_attribute("aria-invalid", "true")
    page.fill("#symbol", "ETHUSDT")
    page.click("#alert-form button[type=submit]")
    expect(page.locator("#alert-rows tr", has_text="ETHUSDT")).to_contain_text(
        "active", timeout=WAIT_MS)
    expect(page.locator("#symbol-error")).to_have_count(0)

    unknown = page.locator("#alert-rows tr", has_text="FOOBARUSDT")
    expect(unknown).to_contain_text("unknown symbol")
    expect(unknown).to_contain_text("FOOBARUSDT is not trading on Binance: this alert cannot fire")
    assert _violations(page) == []
