"""The alerts page walked as a user walks it, twice in a row without a reload, in Chromium:
add three alerts, see a fire and a live tick land in a row and on the chart, type a symbol
and see its live price, sort, filter and search the table, edit one inline (first refused,
then saved), duplicate one through the form, pause, resume and delete, then send a bad
input and fix it. After every swap the form still holds its fields and the table only rows."""

import re
import time

import pytest

from tests.live_server import skip_without_chromium
from webapp.alerts import service as alerts
from webapp.inbox import service as inbox

pytestmark = pytest.mark.browser

skip_without_chromium()

from playwright.sync_api import expect  # noqa: E402

from tests.journeys import PASSWORD, WAIT_MS, publish_tick, signed_in, sound  # noqa: E402

EMAIL = "walker@example.com"
# Watched before the page opens, so the live stream carries its ticks (a stream follows the
# symbols of the user's alerts as they were when it connected).
WATCHED = "DOGEUSDT"  # whose price no other test on the shared site sets
LEVEL = 0.15


@pytest.fixture
def user(live_site):
    uid = live_site.user(EMAIL, PASSWORD)
    with live_site.app.app_context():
        alert = alerts.create_alert(uid, {"symbol": WATCHED, "type": "above", "price": LEVEL,
                                          "note": "doge watch"})
        return uid, alert.id


@pytest.fixture
def page(live_site, user):
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
    expect(page.locator("#symbol")).to_be_focused()  # ready for the next, not lost to <body>
    _markup_is_sound(page)
    return page.locator(f"#alert-{row.get_attribute('data-alert-id')}")  # the row, by its id


def _shown_symbols(page):
    return page.locator("#alert-rows tr[data-alert-id]:visible").evaluate_all(
        "rows => rows.map(r => r.dataset.symbol)")


def _shown_are(page, symbols):
    """Wait until the visible rows are those of `symbols`, in that order (the table sorts
    and filters on the next frame)."""
    page.wait_for_function("""wanted => JSON.stringify(wanted) === JSON.stringify(
        [...document.querySelectorAll('#alert-rows tr[data-alert-id]')]
          .filter(r => r.checkVisibility()).map(r => r.dataset.symbol))""",
                           arg=symbols, timeout=WAIT_MS)


def _sort_filter_and_search(page):
    every = _shown_symbols(page)
    page.select_option("#alert-sort", "symbol")
    expect(page.locator("th[aria-sort=ascending]")).to_have_text("Symbol")
    _shown_are(page, sorted(every))
    page.select_option("#alert-sort", "fired")  # the one that fired comes first
    expect(page.locator("#alert-rows tr[data-alert-id]").first).to_have_attribute(
        "data-symbol", WATCHED)
    page.select_option("#alert-sort", "newest")
    expect(page.locator("th[aria-sort]")).to_have_count(0)
    _markup_is_sound(page)

    page.select_option("#alert-filter-symbol", "ETHUSDT")
    _shown_are(page, ["ETHUSDT"])
    expect(page.locator("#alert-count")).to_contain_text("1 of")
    page.select_option("#alert-filter-symbol", "")
    bnb = page.locator("#alert-rows tr", has_text="BNBUSDT")
    bnb.get_by_role("button", name="Pause").click()
    expect(bnb).to_contain_text("paused", timeout=WAIT_MS)
    page.select_option("#alert-filter-status", "paused")
    _shown_are(page, ["BNBUSDT"])
    bnb.get_by_role("button", name="Resume").click()  # no longer paused: filtered out
    _shown_are(page, [])
    expect(page.locator("#alerts-nomatch")).to_be_visible()
    page.select_option("#alert-filter-status", "")
    _markup_is_sound(page)

    page.fill("#alert-search", "eth dip")
    _shown_are(page, ["ETHUSDT"])
    page.fill("#alert-search", "bnb")
    _shown_are(page, ["BNBUSDT"])
    added = _add(page, "XRPUSDT", "0.5")  # the search does not hide what was just added
    expect(added).to_be_visible()
    _shown_are(page, ["XRPUSDT", "BNBUSDT"])
    page.fill("#alert-search", "bn")  # until the search changes
    _shown_are(page, ["BNBUSDT"])
    page.fill("#alert-search", "")
    added.get_by_role("button", name="Delete").click()
    expect(added).to_have_count(0, timeout=WAIT_MS)
    _shown_are(page, every)
    _markup_is_sound(page)


def _edit_inline(page, row):
    alert_id = row.get_attribute("data-alert-id")
    edit = page.locator(f"#alert-{alert_id}")
    row.get_by_role("link", name="Edit").click()
    expect(edit.locator("form.edit-form")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator(f"#edit-{alert_id}-price")).to_be_focused()
    _markup_is_sound(page)
    edit.get_by_role("link", name="Cancel").click()  # and back, unchanged
    expect(edit.get_by_role("link", name="Edit")).to_be_focused(timeout=WAIT_MS)
    _markup_is_sound(page)

    edit.get_by_role("link", name="Edit").click()
    price = page.locator(f"#edit-{alert_id}-price")
    expect(price).to_have_value("65000", timeout=WAIT_MS)
    price.fill("-5")
    edit.get_by_role("button", name="Save").click()
    expect(page.locator(f"#edit-{alert_id}-price-error")).to_contain_text("above 0",
                                                                           timeout=WAIT_MS)
    expect(page.locator(f"#edit-{alert_id}-price")).to_have_attribute("aria-invalid", "true")
    expect(page.locator(f"#edit-{alert_id}-price")).to_be_focused()
    _markup_is_sound(page)
    page.fill(f"#edit-{alert_id}-price", "66,000")
    page.fill(f"#edit-{alert_id}-note", "edited")
    edit.get_by_role("button", name="Save").click()
    expect(edit.locator("form.edit-form")).to_have_count(0, timeout=WAIT_MS)
    expect(edit).to_contain_text("price ≥ 66000")
    expect(edit).to_have_attribute("data-level", "66000")
    expect(edit).to_contain_text("edited")
    _markup_is_sound(page)


def _duplicate(page, row, round_):
    row.get_by_role("link", name="Duplicate").click()  # fills the form, adds nothing yet
    expect(page.locator("#price")).to_have_value("2500", timeout=WAIT_MS)
    expect(page.locator("#symbol")).to_have_value("ETHUSDT")
    expect(page.locator("#note")).to_have_value(f"{round_} eth dip")
    expect(page.locator("#price")).to_be_focused()
    _markup_is_sound(page)
    page.fill("#price", "2600")
    page.click("#alert-form button[type=submit]")
    expect(page.locator("#alert-rows tr", has_text="ETHUSDT")).to_have_count(2, timeout=WAIT_MS)
    expect(page.locator("#alert-rows tr[data-symbol=ETHUSDT][data-level='2600']")).to_have_count(1)
    _markup_is_sound(page)


def _fire_and_tick(page, site, user, round_, fired_at, price):
    uid, alert_id = user
    watched = page.locator(f"#alert-{alert_id}")
    with site.app.app_context():  # the matcher's notification of a fire names the alert
        inbox.store({"user_id": uid, "type": "PRICE_ALERT", "title": f"{round_}: DOGE ≥ {LEVEL}",
                     "message": "fired", "alert_id": alert_id,
                     "data": {"symbol": WATCHED, "condition": "above", "target": LEVEL,
                              "price": float(fired_at)}})
    expect(page.locator("#toasts .toast", has_text=f"{round_}: DOGE")).to_be_visible(
        timeout=WAIT_MS)
    fired = watched.locator("[data-fired-cell] time")
    expect(fired).to_have_attribute("datetime", re.compile(r"^\d{4}-"), timeout=WAIT_MS)
    expect(watched.locator("[data-fired-cell]")).to_contain_text(f"at {fired_at}")
    _markup_is_sound(page)

    # the chart of the watched symbol: its line, the alert's level, the fire's marker
    chart = page.locator("#alert-chart")
    page.select_option("#chart-symbol", WATCHED)
    expect(chart).to_have_attribute("data-symbol", WATCHED)
    expect(chart).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
    expect(chart).to_have_attribute("data-levels", "1")
    expect(chart.locator("canvas").first).to_be_visible()
    assert int(chart.get_attribute("data-markers")) >= 1
    assert int(chart.get_attribute("data-points")) >= 1

    # the stream is live (the fire came over it): a tick moves the row and the chart
    publish_tick(site, WATCHED, price, int(time.time() * 1000))
    expect(watched.locator("[data-last-value]")).to_have_text(price, timeout=WAIT_MS)
    expect(watched.locator("[data-age]")).to_have_text(re.compile(r"^\d+ s ago$"))
    expect(watched.locator("[data-distance-cell]")).to_have_text(
        f"{(LEVEL - float(price)) / float(price) * 100:+.2f} %")
    expect(chart).to_have_attribute("data-last", price, timeout=WAIT_MS)
    _markup_is_sound(page)


def _picker_quotes(page, site, price, later):
    """Typing a symbol shows its last price beside the field, and ticks keep it live."""
    page.locator("#symbol").press_sequentially(WATCHED.lower())
    quote = page.locator("#symbol-quote")
    expect(quote).to_contain_text(f"{WATCHED}: last {price}", timeout=WAIT_MS)
    publish_tick(site, WATCHED, later, int(time.time() * 1000))
    expect(quote.locator("[data-quote-price]")).to_have_text(later, timeout=WAIT_MS)
    page.fill("#symbol", "")
    _markup_is_sound(page)


def _chart_shows(page, symbol, levels):
    chart = page.locator("#alert-chart")
    page.select_option("#chart-symbol", symbol)
    expect(chart).to_have_attribute("data-symbol", symbol)
    expect(chart).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
    expect(chart).to_have_attribute("data-levels", str(levels))


def _walk(page, site, user, round_, fired_at, price):
    symbols = [("BTCUSDT", "65000", f"{round_} breakout"), ("ETHUSDT", "2500", f"{round_} eth dip"),
               ("BNBUSDT", "600", "")]
    rows = [_add(page, *added) for added in symbols]
    _chart_shows(page, "BNBUSDT", 1)  # the chart follows the newest alert
    _fire_and_tick(page, site, user, round_, fired_at, price)
    _picker_quotes(page, site, price, fired_at)
    _sort_filter_and_search(page)
    _edit_inline(page, rows[0])
    _duplicate(page, rows[1], round_)
    _chart_shows(page, "ETHUSDT", 2)  # the copy's level joined the chart
    for row in rows:
        row.get_by_role("button", name="Pause").click()
        expect(row).to_contain_text("paused", timeout=WAIT_MS)
        _markup_is_sound(page)
        row.get_by_role("button", name="Resume").click()
        expect(row).to_contain_text("active", timeout=WAIT_MS)
        _markup_is_sound(page)
    for symbol in ("BTCUSDT", "ETHUSDT", "ETHUSDT", "BNBUSDT"):  # by keyboard
        left = page.locator("#alert-rows tr[data-alert-id]").count()
        page.locator("#alert-rows tr", has_text=symbol).first.get_by_role(
            "button", name="Delete").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#alert-rows tr[data-alert-id]")).to_have_count(left - 1,
                                                                           timeout=WAIT_MS)
        if left > 1:  # the focus went on to a row still there, not to the page's start
            expect(page.locator("#alert-rows tr[data-alert-id] :focus")).to_have_count(
                1, timeout=WAIT_MS)
        _markup_is_sound(page)
    # a bad input, then the same form fixed
    page.fill("#symbol", "B")
    page.fill("#price", "-1")
    page.click("#alert-form button[type=submit]")
    expect(page.locator("#symbol-error")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#price")).to_have_attribute("aria-invalid", "true")
    _markup_is_sound(page)
    row = _add(page, "ADAUSDT", "0.5")
    expect(page.locator("#symbol-error")).to_have_count(0)
    row.get_by_role("button", name="Delete").click()
    expect(page.locator("#alert-rows tr", has_text="ADAUSDT")).to_have_count(0, timeout=WAIT_MS)
    _markup_is_sound(page)


def test_the_whole_alerts_journey_twice_without_a_reload(page, live_site, user):
    _walk(page, live_site, user, "first", "0.1512", "0.1425")
    _walk(page, live_site, user, "second", "0.1525", "0.15775")  # signed_in: one document
