"""The inbox page walked as a user walks it, twice in a row without a reload, in Chromium:
notifications arrive live, one is read, one deleted; filter by type, then unread only, mark
all read there; back to everything while the live feed is down, load more to the end, mark
all read. After every step the markup is sound and the nav badge says what the API counts."""

import re

import pytest
import redis

from tests.live_server import skip_without_chromium
from webapp.inbox import service as inbox

pytestmark = pytest.mark.browser

skip_without_chromium()

from playwright.sync_api import expect  # noqa: E402

from tests.journeys import PASSWORD, WAIT_MS, signed_in, step_done  # noqa: E402

EMAIL = "inbox-walker@example.com"
BATCH = 25  # more than a page (20)
STREAM = re.compile(r"/stream(\?|$)")  # the page's live feed


@pytest.fixture
def user(live_site):
    return live_site.user(EMAIL, PASSWORD)


def _store(site, uid, *notes):
    """Notifications as any source stores them: they reach the open page over its SSE feed."""
    with site.app.app_context():
        return [inbox.store({"user_id": uid, "type": ntype, "title": title,
                             "message": "<b>not bold</b>"})[0] for ntype, title in notes]


def _filter(page, ntype, unread):
    page.select_option("#type", ntype)
    page.get_by_label("Unread only").set_checked(unread)
    page.get_by_role("button", name="Filter").click()


def _notes(page):
    return page.locator("#notes li.note")


def _api_ids(page, site):
    response = page.request.get(site.url + "/api/v1/notifications?limit=100")
    assert response.ok and "x-next-cursor" not in response.headers
    return [f"n-{item['id']}" for item in response.json()]


def _arrive_read_delete(page, site, uid, round_):
    price, order, status = _store(site, uid, ("PRICE_ALERT", f"{round_}: BTCUSDT above 65000"),
                                  ("ORDER_EXECUTED", f"{round_}: bought 0.5 BTC"),
                                  ("STRATEGY_STATUS", f"{round_}: grid paused"))
    for nid in (status, order, price):
        expect(page.locator(f"#n-{nid}")).to_be_visible(timeout=WAIT_MS)
    expect(_notes(page).first).to_have_id(f"n-{status}")  # newest first
    expect(page.locator("#toasts .toast", has_text=f"{round_}: grid paused")).to_be_visible()
    expect(page.locator(f"#n-{order} .note-message")).to_have_text("<b>not bold</b>")
    step_done(page, site)

    # by keyboard: the focus stays with the item, then goes on to the next one
    page.locator(f"#n-{price}").get_by_role("button", name="Mark read").focus()
    page.keyboard.press("Enter")
    expect(page.locator(f"#n-{price}")).to_have_class(re.compile(r"\bread\b"), timeout=WAIT_MS)
    expect(page.locator(f"#n-{price}").get_by_role("button", name="Mark read")).to_have_count(0)
    expect(page.locator(f"#n-{price}").get_by_role("button", name="Delete")).to_be_focused()
    step_done(page, site)

    page.locator(f"#n-{status}").get_by_role("button", name="Delete").focus()
    page.keyboard.press("Enter")
    expect(page.locator(f"#n-{status}")).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator(f"#n-{order}").get_by_role("button", name="Mark read")).to_be_focused()
    step_done(page, site)
    return price, order


def _filters_and_mark_all_read(page, site, uid, price, order):
    _filter(page, "ORDER_EXECUTED", unread=False)
    expect(page.locator(f"#n-{price}")).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator(f"#n-{order}")).to_be_visible()
    for kind in page.locator("#notes li.note .note-type").all_text_contents():
        assert kind == "order executed"
    step_done(page, site)

    _filter(page, "ORDER_EXECUTED", unread=True)
    expect(page.get_by_label("Unread only")).to_be_checked(timeout=WAIT_MS)
    expect(page.locator("#notes li.note.read")).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator(f"#n-{order}")).to_be_visible()
    step_done(page, site)

    # more than a page arrives while the list is filtered: only the badge shows it
    _store(site, uid, *[("STRATEGY_STATUS", f"batch {i:02d}") for i in range(BATCH)])
    step_done(page, site)
    expect(page.locator("#notes li.note", has_text="batch")).to_have_count(0)

    page.get_by_role("button", name="Mark all read").click()
    expect(page.locator("#notes")).to_contain_text("No unread notifications.", timeout=WAIT_MS)
    expect(page.locator("#notes li.empty")).to_be_visible()
    expect(_notes(page)).to_have_count(0)
    step_done(page, site)


def _back_to_everything_while_the_feed_is_down(page, site, uid):
    """The live feed drops (Redis cuts the web's pub/sub link) and cannot reconnect until the
    user is back on the whole list, which shows what came meanwhile: the replay that follows
    must not add it again."""
    page.route(STREAM, lambda route: route.abort())
    with redis.Redis.from_url(site.app.config["REDIS_URL"]) as r:
        r.client_kill_filter(_type="pubsub")
    (missed,) = _store(site, uid, ("ORDER_EXECUTED", "filled while the feed was down"))
    _filter(page, "", unread=False)
    expect(page.get_by_label("Unread only")).not_to_be_checked(timeout=WAIT_MS)
    expect(_notes(page)).to_have_count(20, timeout=WAIT_MS)
    expect(_notes(page).first).to_have_id(f"n-{missed}")
    page.unroute(STREAM)
    (after,) = _store(site, uid, ("ORDER_EXECUTED", "filled once the feed was back"))
    expect(_notes(page).first).to_have_id(f"n-{after}", timeout=WAIT_MS)  # replayed after it
    expect(page.locator(f"#n-{missed}")).to_have_count(1)
    step_done(page, site)


def _load_everything_and_mark_all_read(page, site, uid):
    everything = _api_ids(page, site)
    assert len(everything) > len(_notes(page).all())  # more than a page
    while _notes(page).count() < len(everything):
        shown = _notes(page).count()
        page.get_by_role("button", name="Load more").click()
        expect(_notes(page)).to_have_count(min(shown + 20, len(everything)), timeout=WAIT_MS)
        step_done(page, site)
    expect(page.get_by_role("button", name="Load more")).to_have_count(0)
    assert [note.get_attribute("id") for note in _notes(page).all()] == everything

    page.get_by_role("button", name="Mark all read").click()
    expect(page.locator("#notes li.note.unread")).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator("#unread-badge")).to_have_attribute("data-count", "0")
    step_done(page, site)


def _walk(page, site, uid, round_):
    price, order = _arrive_read_delete(page, site, uid, round_)
    _filters_and_mark_all_read(page, site, uid, price, order)
    _back_to_everything_while_the_feed_is_down(page, site, uid)
    _load_everything_and_mark_all_read(page, site, uid)


def test_the_whole_inbox_journey_twice_without_a_reload(live_site, user):
    with signed_in(live_site, EMAIL, "/notifications/") as page:
        step_done(page, live_site)
        _walk(page, live_site, user, "first")
        _walk(page, live_site, user, "second")
