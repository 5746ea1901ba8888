"""The alerts page walked as a user walks it, twice in a row without a reload, in Chromium:
add three alerts, pause, resume and delete them, then send a bad input and fix it. After
every swap the form still holds its fields and the table only rows."""

import pytest

from tests.live_server import skip_without_chromium

pytestmark = pytest.mark.browser

skip_without_chromium()

from playwright.sync_api import expect  # noqa: E402

from tests.journeys import PASSWORD, WAIT_MS, signed_in, sound  # noqa: E402

EMAIL = "walker@example.com"


@pytest.fixture
def page(live_site):
    live_site.user(EMAIL, PASSWORD)
    with signed_in(live_site, EMAIL, "/alerts/") as page:
        yield page


def _markup_is_sound(page):
    sound(page)
    fields = page.evaluate("""() => [...document.querySelectorAll('#alert-form [name]')]
        .map(e => e.name)""")
    assert {"symbol", "type", "price", "mode", "buffer", "expires_at", "note",
            "csrf_token"} <= set(fields)


def _add(page, symbol, price, note=""):
    page.fill("#symbol", symbol)
    page.fill("#price", price)
    page.fill("#note", note)
    page.click("#alert-form button[type=submit]")
    row = page.locator("#alert-rows tr", has_text=symbol.upper())
    expect(row).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#symbol")).to_have_value("")
    _markup_is_sound(page)
    return row


def _walk(page, symbols):
    rows = [_add(page, symbol, price) for symbol, price in symbols]
    for row in rows:
        row.get_by_role("button", name="Pause").click()
        expect(row).to_contain_text("paused", timeout=WAIT_MS)
        _markup_is_sound(page)
        row.get_by_role("button", name="Resume").click()
        expect(row).to_contain_text("active", timeout=WAIT_MS)
        _markup_is_sound(page)
    for (symbol, _), row in zip(symbols, rows, strict=True):
        row.get_by_role("button", name="Delete").click()
        expect(page.locator("#alert-rows tr", has_text=symbol)).to_have_count(0,
                                                                             timeout=WAIT_MS)
        _markup_is_sound(page)
    # a bad input, then the same form fixed
    page.fill("#symbol", "B")
    page.fill("#price", "-1")
    page.click("#alert-form button[type=submit]")
    expect(page.locator("#symbol-error")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#price")).to_have_attribute("aria-invalid", "true")
    _markup_is_sound(page)
    row = _add(page, "SOLUSDT", "150")
    expect(page.locator("#symbol-error")).to_have_count(0)
    row.get_by_role("button", name="Delete").click()
    expect(page.locator("#alert-rows tr", has_text="SOLUSDT")).to_have_count(0, timeout=WAIT_MS)
    _markup_is_sound(page)


def test_the_whole_alerts_journey_twice_without_a_reload(page):
    symbols = [("BTCUSDT", "65000"), ("ETHUSDT", "2500"), ("BNBUSDT", "600")]
    _walk(page, symbols)
    _walk(page, symbols)  # signed_in checks, leaving, that it was all one document
