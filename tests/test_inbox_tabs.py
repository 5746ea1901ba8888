"""Two tabs of one user in Chromium, twice in a row without a reload: what is read, deleted,
acknowledged or all marked read in one shows in the other at once (the `changed` event),
toasts included, and what one missed while its feed was away shows once it is back; both
stay sound with a badge that agrees with the API."""

import re

import pytest
import redis

from tests.live_server import skip_without_chromium
from webapp.inbox import service as inbox

pytestmark = pytest.mark.browser

skip_without_chromium()

from playwright.sync_api import expect  # noqa: E402

from tests.journeys import PASSWORD, WAIT_MS, signed_in, sound, step_done  # noqa: E402

EMAIL = "two-tabs@example.com"
ONE_TAB = "one-tab@example.com"
DEAF_TAB = "deaf-tab@example.com"
STREAM = re.compile(r"/stream(\?|$)")  # the page's live feed


def _store(site, uid, ntype, title):
    with site.app.app_context():
        return inbox.store({"user_id": uid, "type": ntype, "title": title, "message": "m"})[0]


def _both_done(pages, site):
    for page in pages:
        step_done(page, site)


def _round(inbox_tab, feed_tab, site, uid, round_):
    read = _store(site, uid, "ORDER_EXECUTED", f"{round_}: bought 0.5 BTC")
    gone = _store(site, uid, "STRATEGY_STATUS", f"{round_}: grid paused")
    insists = _store(site, uid, "RISK_LIMIT_BREACHED", f"{round_}: leverage 11x")
    left = _store(site, uid, "PRICE_ALERT", f"{round_}: BTCUSDT above 65000")
    for page in (inbox_tab, feed_tab):
        for nid in (read, gone, insists, left):
            expect(page.locator(f"#n-{nid}")).to_have_class(re.compile(r"\bunread\b"),
                                                             timeout=WAIT_MS)
    _both_done((inbox_tab, feed_tab), site)

    inbox_tab.locator(f"#n-{read}").get_by_role("button", name="Mark read").click()
    item = feed_tab.locator(f"#n-{read}")
    expect(item).to_have_class(re.compile(r"\bread\b"), timeout=WAIT_MS)
    expect(item.get_by_role("button", name="Mark read")).to_have_count(0)
    expect(item.get_by_role("button", name="Delete")).to_have_count(1)
    _both_done((inbox_tab, feed_tab), site)

    feed_tab.locator(f"#n-{gone}").get_by_role("button", name="Delete").click()
    expect(inbox_tab.locator(f"#n-{gone}")).to_have_count(0, timeout=WAIT_MS)
    expect(feed_tab.locator(f"#n-{gone}")).to_have_count(0, timeout=WAIT_MS)
    _both_done((inbox_tab, feed_tab), site)

    # acknowledged in one tab: the other's item and toast say so, their buttons gone
    toast = feed_tab.locator("#toasts .toast", has_text=f"{round_}: leverage 11x")
    expect(toast.get_by_role("button", name="Acknowledge")).to_be_visible(timeout=WAIT_MS)
    inbox_tab.locator(f"#n-{insists}").get_by_role("button", name="Acknowledge").click()
    for page in (inbox_tab, feed_tab):
        item = page.locator(f"#n-{insists}")
        expect(item.locator(".note-ack")).to_contain_text(
            f"Acknowledged by {EMAIL} on the web at", timeout=WAIT_MS)
        expect(item.get_by_role("button", name="Acknowledge")).to_have_count(0)
        expect(item.get_by_role("button", name="Mark read")).to_have_count(1)
    expect(toast.locator(".toast-ack")).to_have_text(f"Acknowledged by {EMAIL} on the web",
                                                     timeout=WAIT_MS)
    _both_done((inbox_tab, feed_tab), site)

    inbox_tab.get_by_role("button", name="Mark all read").click()
    for page in (inbox_tab, feed_tab):
        expect(page.locator("li.note.unread")).to_have_count(0, timeout=WAIT_MS)
        expect(page.locator(f"#n-{left}").get_by_role("button", name="Mark read")
               ).to_have_count(0)
        expect(page.locator("#unread-badge")).to_have_attribute("data-count", "0")
    _both_done((inbox_tab, feed_tab), site)


def _feed_away(inbox_tab, feed_tab, site, uid, round_):
    """The dashboard tab's feed is cut (Redis drops the web's pub/sub link, and its reconnects
    are refused) while the inbox tab reads one and deletes another: back, it shows both."""
    read = _store(site, uid, "ORDER_EXECUTED", f"{round_}: sold 0.1 BTC")
    gone = _store(site, uid, "STRATEGY_STATUS", f"{round_}: grid resumed")
    shown = _store(site, uid, "RISK_LIMIT_BREACHED", f"{round_}: margin 91%")
    for nid in (read, gone, shown):
        expect(feed_tab.locator(f"#n-{nid}")).to_be_visible(timeout=WAIT_MS)
    feed_tab.route(STREAM, lambda route: route.abort())
    with redis.Redis.from_url(site.app.config["REDIS_URL"]) as r:
        r.client_kill_filter(_type="pubsub")
    inbox_tab.locator(f"#n-{read}").get_by_role("button", name="Mark read").click()
    inbox_tab.locator(f"#n-{gone}").get_by_role("button", name="Delete").click()
    expect(inbox_tab.locator(f"#n-{gone}")).to_have_count(0, timeout=WAIT_MS)
    # one shown in both, and one that comes meanwhile, are acknowledged in the other tab
    missed = _store(site, uid, "RISK_LIMIT_BREACHED", f"{round_}: margin 95%")
    for nid in (shown, missed):
        inbox_tab.locator(f"#n-{nid}").get_by_role("button", name="Acknowledge").click()
        expect(inbox_tab.locator(f"#n-{nid} .note-ack")).to_be_visible(timeout=WAIT_MS)
    feed_tab.wait_for_timeout(500)  # its feed stays away a moment: the changes are missed
    expect(feed_tab.locator(f"#n-{read}")).to_have_class(re.compile(r"\bunread\b"))
    feed_tab.unroute(STREAM)
    # first the replayed toast, which fades in 8 s: as it stands, no button
    toast = feed_tab.locator("#toasts .toast", has_text=f"{round_}: margin 95%")
    expect(toast.locator(".toast-ack")).to_have_text(f"Acknowledged by {EMAIL} on the web",
                                                     timeout=WAIT_MS)
    expect(toast.get_by_role("button", name="Acknowledge")).to_have_count(0)
    expect(feed_tab.locator(f"#n-{gone}")).to_have_count(0, timeout=WAIT_MS)
    expect(feed_tab.locator(f"#n-{read}")).to_have_class(re.compile(r"\bread\b"))
    for nid in (shown, missed):  # checked on return; replayed as it stands
        item = feed_tab.locator(f"#n-{nid}")
        expect(item.locator(".note-ack")).to_contain_text(
            f"Acknowledged by {EMAIL} on the web at", timeout=WAIT_MS)
        expect(item.get_by_role("button", name="Acknowledge")).to_have_count(0)
    _both_done((inbox_tab, feed_tab), site)


def test_two_tabs_keep_in_step_twice_in_a_row(live_site):
    uid = live_site.user(EMAIL, PASSWORD)
    with signed_in(live_site, EMAIL, "/notifications/") as inbox_tab:
        feed_tab = inbox_tab.context.new_page()
        feed_tab.goto(live_site.url + "/dashboard")
        feed_tab.evaluate("window.__sameDocument = true")
        _both_done((inbox_tab, feed_tab), live_site)
        for round_ in ("first", "second"):
            _round(inbox_tab, feed_tab, live_site, uid, round_)
            _feed_away(inbox_tab, feed_tab, live_site, uid, round_)
        _both_done((inbox_tab, feed_tab), live_site)


def test_a_feed_answered_with_retries_alone_asks_for_nothing_until_its_opening_comes(live_site):
    """While Redis is away /stream answers a retry and no opening, every few seconds: the page
    checks its items once the real opening comes, not on each of those."""
    uid = live_site.user(ONE_TAB, PASSWORD)
    _store(live_site, uid, "ORDER_EXECUTED", "bought 0.1 BTC")
    with signed_in(live_site, ONE_TAB, "/notifications/") as page:
        asked = []
        page.on("request", lambda request: asked.append(request.url)
                if "/api/v1/notifications" in request.url else None)
        answered = []

        def retry_only(route):
            answered.append(1)
            route.fulfill(status=200, content_type="text/event-stream", body="retry: 100\n\n")

        page.route(STREAM, retry_only)
        with redis.Redis.from_url(live_site.app.config["REDIS_URL"]) as r:
            r.client_kill_filter(_type="pubsub")  # the open feed ends: the page comes again
        assert _until(page, lambda: len(answered) > 3)
        assert asked == []
        page.unroute(STREAM)
        assert _until(page, lambda: asked)
        page.wait_for_timeout(300)
        assert len(asked) == 1, asked
        step_done(page, live_site)


def _until(page, check):
    """Until `check()`, letting the page's events in (a sleep would hold them)."""
    for _ in range(WAIT_MS // 50):
        if check():
            return True
        page.wait_for_timeout(50)
    return check()


def test_an_item_deleted_where_the_page_did_not_hear_goes_when_used(live_site):
    """A page whose feed missed a deletion (another tab, the API) still shows the item: its
    Delete then just takes it away, and Mark read or Acknowledge take it away saying why,
    not an error box beside an item that stays. Twice in a row, without a reload."""
    uid = live_site.user(DEAF_TAB, PASSWORD)
    rounds = [{button: _store(live_site, uid, ntype, f"{round_}: {title}")
               for button, ntype, title in (("Delete", "ORDER_EXECUTED", "bought 1 ETH"),
                                            ("Mark read", "ORDER_EXECUTED", "sold 1 ETH"),
                                            ("Acknowledge", "RISK_LIMIT_BREACHED", "margin 92%"))}
              for round_ in ("first", "second")]
    with signed_in(live_site, DEAF_TAB, "/notifications/") as page:
        page.route(STREAM, lambda route: route.abort())  # deaf: no `changed` reaches it
        page.goto(live_site.url + "/notifications/")
        page.evaluate("window.__sameDocument = true")
        for nids in rounds:
            for nid in nids.values():
                expect(page.locator(f"#n-{nid}")).to_be_visible()
            with live_site.app.app_context():
                for nid in nids.values():
                    inbox.delete(uid, nid)
            for button, nid in nids.items():
                page.locator(f"#n-{nid}").get_by_role("button", name=button).click()
                expect(page.locator(f"#n-{nid}")).to_have_count(0, timeout=WAIT_MS)
            errors = page.locator("#flashes .flash-error")  # said once, not piled up
            expect(errors).to_have_text(
                ["That notification was deleted meanwhile, perhaps in another tab."])
            sound(page)
