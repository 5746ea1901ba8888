"""The inbox's Acknowledge button walked in Chromium: two notifications that insist, one after
the other without a reload, then one that arrives live (its item and its toast); after every
swap the markup is sound and the item says who acknowledged it and when."""

import pytest

from tests.live_server import skip_without_chromium
from webapp.extensions import db
from webapp.inbox import service as inbox
from webapp.models import Escalation

pytestmark = pytest.mark.browser

skip_without_chromium()

from playwright.sync_api import expect  # noqa: E402

from tests.journeys import PASSWORD, WAIT_MS, signed_in, sound  # noqa: E402

EMAIL = "insist-walker@example.com"


def _store(site, uid, ntype, title):
    with site.app.app_context():
        return inbox.store({"user_id": uid, "type": ntype, "title": title,
                            "message": "<b>not bold</b>"})[0]


def _acknowledge(page, nid):
    item = page.locator(f"#n-{nid}")
    item.get_by_role("button", name="Acknowledge").click()
    expect(item.locator(".note-ack")).to_contain_text(
        f"Acknowledged by {EMAIL} on the web at", timeout=WAIT_MS)
    expect(item.get_by_role("button", name="Acknowledge")).to_have_count(0)
    expect(item.get_by_role("button", name="Mark read")).to_have_count(1)
    sound(page)


def test_acknowledge_in_the_inbox_twice_in_a_row_then_a_live_one(live_site):
    uid = live_site.user(EMAIL, PASSWORD)
    first = _store(live_site, uid, "RISK_LIMIT_BREACHED", "Leverage 11x")
    second = _store(live_site, uid, "BROKER_DISCONNECTED", "Broker offline")
    plain = _store(live_site, uid, "ORDER_EXECUTED", "Bought 0.5 BTC")
    with signed_in(live_site, EMAIL, "/notifications/") as page:
        expect(page.locator(f"#n-{plain}")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator(f"#n-{plain}").get_by_role("button", name="Acknowledge")
               ).to_have_count(0)
        _acknowledge(page, first)
        _acknowledge(page, second)
        expect(page.locator(f"#n-{first} .note-ack")).to_be_visible()  # the first one kept

        live = _store(live_site, uid, "ORDER_EXECUTION_FAILED", "Order 42 failed")
        toast = page.locator("#toasts .toast", has_text="Order 42 failed")
        expect(toast.get_by_role("button", name="Acknowledge")).to_be_visible(timeout=WAIT_MS)
        toast.get_by_role("button", name="Acknowledge").click()
        expect(toast.locator(".toast-ack")).to_have_text(
            f"Acknowledged by {EMAIL} on the web", timeout=WAIT_MS)
        sound(page)
        # the live item on the same page says so too, its button gone
        expect(page.locator(f"#n-{live} .note-ack")).to_contain_text(
            f"Acknowledged by {EMAIL} on the web at", timeout=WAIT_MS)
        expect(page.locator(f"#n-{live}").get_by_role("button", name="Acknowledge")
               ).to_have_count(0)
        sound(page)
        # the other way: acknowledged from its item, its toast says so too
        again = _store(live_site, uid, "ORDER_EXECUTION_FAILED", "Order 43 failed")
        toast = page.locator("#toasts .toast", has_text="Order 43 failed")
        expect(toast.get_by_role("button", name="Acknowledge")).to_be_visible(timeout=WAIT_MS)
        _acknowledge(page, again)
        expect(toast.locator(".toast-ack")).to_have_text(
            f"Acknowledged by {EMAIL} on the web", timeout=WAIT_MS)
        expect(toast.get_by_role("button", name="Acknowledge")).to_have_count(0)
        sound(page)
        # by keyboard from its toast: the focus stays on the toast, which stays while it does
        page.clock.install()  # the toasts' 8 s, run on demand
        keyed = _store(live_site, uid, "ORDER_EXECUTION_FAILED", "Order 44 failed")
        toast = page.locator("#toasts .toast", has_text="Order 44 failed")
        toast.get_by_role("button", name="Acknowledge").focus()  # at once: it fades in 8 s
        sound(page)  # settled: htmx has taken the new button in
        page.keyboard.press("Enter")
        expect(toast.locator(".toast-ack")).to_be_focused(timeout=WAIT_MS)
        page.clock.run_for(20_000)
        expect(toast).to_have_count(1)  # not taken from under the focus
        page.locator(f"#n-{keyed}").get_by_role("button", name="Mark read").focus()
        page.clock.run_for(20_000)
        expect(toast).to_have_count(0)  # once the focus left
        sound(page)
    with live_site.app.app_context():
        rows = db.session.scalars(db.select(Escalation).where(Escalation.user_id == uid)).all()
        assert sorted(r.notification_id for r in rows) == sorted(
            [first, second, live, again, keyed])
        assert {(r.ended, r.acked_by) for r in rows} == {("acknowledged", f"{EMAIL} on the web")}
        db.session.remove()
