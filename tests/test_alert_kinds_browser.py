"""The create form in Chromium: choosing a kind shows its fields only, before and after a
swap, and each kind is created without a reload."""

import pytest

from tests.live_server import skip_without_chromium

pytestmark = pytest.mark.browser

skip_without_chromium()

from playwright.sync_api import expect  # noqa: E402

from tests.journeys import PASSWORD, WAIT_MS, signed_in, sound  # noqa: E402

EMAIL = "kinds@example.com"
FIELDS = {"price": "#price", "pct": "#pct", "window": "#window", "low": "#low",
          "high": "#high"}


@pytest.fixture
def page(live_site):
    live_site.user(EMAIL, PASSWORD)
    with signed_in(live_site, EMAIL, "/alerts/") as page:
        yield page


def shown(page, *names):
    for name, selector in FIELDS.items():
        expect(page.locator(selector)).to_be_visible(visible=name in names)


def test_each_kind_shows_its_own_fields_and_is_created(page):
    shown(page, "price")
    page.select_option("#type", "pct_up")
    shown(page, "pct", "window")
    page.fill("#symbol", "ETHUSDT")
    page.fill("#pct", "2.5")
    page.click("#alert-form button[type=submit]")  # no window yet
    expect(page.locator("#window-error")).to_be_visible(timeout=WAIT_MS)
    shown(page, "pct", "window")  # the form swapped in with its errors keeps the kind
    page.select_option("#window", "1h")
    page.click("#alert-form button[type=submit]")
    expect(page.locator("#alert-rows tr", has_text="ETHUSDT")).to_have_count(1, timeout=WAIT_MS)
    shown(page, "price")  # the fresh form starts over at `above`
    sound(page)

    page.select_option("#type", "channel_exit")
    shown(page, "low", "high")
    page.fill("#symbol", "BNBUSDT")
    page.fill("#low", "500")
    page.fill("#high", "700")
    page.click("#alert-form button[type=submit]")
    expect(page.locator("#alert-rows tr", has_text="BNBUSDT")).to_have_count(1, timeout=WAIT_MS)
    sound(page)
