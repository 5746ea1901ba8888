"""Toasts on a phone: the two newest show, each can be dismissed at once, and the inbox's
buttons stay usable under them (four had covered 63 % of the screen for 8 s each). Twice
in a row, without a reload."""

import pytest

from tests.live_server import skip_without_chromium
from webapp.inbox import service as inbox

pytestmark = pytest.mark.browser

skip_without_chromium()

from playwright.sync_api import expect  # noqa: E402

from tests.journeys import PASSWORD, WAIT_MS, signed_in, step_done  # noqa: E402
from tests.test_accessibility import _violations  # noqa: E402

PHONE = {"width": 390, "height": 844}


def test_a_phone_shows_two_toasts_and_each_is_dismissed_at_once(live_site):
    uid = live_site.user("phone-toasts@example.com", PASSWORD)
    with signed_in(live_site, "phone-toasts@example.com", "/notifications/") as page:
        page.set_viewport_size(PHONE)
        for round_ in ("first", "second"):
            with live_site.app.app_context():
                for i in range(4):
                    inbox.store({"user_id": uid, "type": "RISK_VIOLATION",
                                 "title": f"{round_} {i}: leverage 1{i}x", "message": "m"})
            toasts = page.locator("#toasts .toast")
            newest = toasts.first
            expect(newest).to_contain_text(f"{round_} 3: leverage 13x", timeout=WAIT_MS)
            expect(page.locator("#toasts .toast:visible")).to_have_count(2)
            height = page.evaluate("document.getElementById('toasts').offsetHeight")
            assert height < PHONE["height"] / 3, height
            # once they have slid in: half-faded text mid-animation reads as low contrast
            page.wait_for_function("document.getAnimations().every(a => a.playState !== 'running')")
            assert _violations(page) == []
            newest.get_by_role("button", name=f"Dismiss: {round_} 3").click()
            expect(page.locator("#toasts .toast", has_text=f"{round_} 3")).to_have_count(0)
            expect(page.locator("#toasts .toast:visible")).to_have_count(2)
            # a pointer's Dismiss hands the focus to no toast: one holding it would not fade
            assert not page.evaluate("!!document.activeElement.closest('#toasts')")
            toasts.first.locator(".toast-close").focus()  # the keyboard's: on to the next
            left = toasts.count()
            page.keyboard.press("Enter")
            expect(toasts).to_have_count(left - 1)
            expect(toasts.first.locator(".toast-close")).to_be_focused()
            while toasts.count():
                page.keyboard.press("Enter")
            expect(toasts).to_have_count(0)
            step_done(page, live_site)


def test_a_toast_holding_the_focus_stays_as_newer_ones_come(live_site):
    """Past four the oldest go, and on a phone past two they hide: not one a keyboard user
    is on (it was dropped, the focus falling to the page's start)."""
    uid = live_site.user("focused-toast@example.com", PASSWORD)
    with signed_in(live_site, "focused-toast@example.com", "/dashboard") as page:
        for size in ({"width": 1280, "height": 800}, PHONE):
            page.set_viewport_size(size)
            with live_site.app.app_context():
                inbox.store({"user_id": uid, "type": "RISK_VIOLATION",
                             "title": f"read me {size['width']}", "message": "m"})
            held = page.locator("#toasts .toast", has_text=f"read me {size['width']}")
            expect(held).to_be_visible(timeout=WAIT_MS)
            held.locator(".toast-close").focus()
            with live_site.app.app_context():
                for i in range(5):
                    inbox.store({"user_id": uid, "type": "RISK_VIOLATION",
                                 "title": f"newer {size['width']} {i}", "message": "m"})
            expect(page.locator("#toasts .toast", has_text=f"newer {size['width']} 4")
                   ).to_have_count(1, timeout=WAIT_MS)
            expect(held).to_be_visible()
            expect(held.locator(".toast-close")).to_be_focused()
            page.keyboard.press("Enter")  # read: dismissed
            expect(held).to_have_count(0)
            step_done(page, live_site)
