"""A real Chromium on the notification settings page: each change saves itself (HTMX)."""


import pytest

from tests.live_server import launch_chromium, skip_without_chromium
from webapp.extensions import db
from webapp.models import User
from webapp.preferences import service as preferences

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"

skip_without_chromium()

from playwright.sync_api import expect, sync_playwright  # noqa: E402


def saved_preferences(app, email):
    with app.app_context():
        uid = db.session.scalar(db.select(User.id).where(User.email == email))
        pref = preferences.preferences_for(uid)
        db.session.expunge(pref)
        return pref


def settings_page(page, live_site, email):
    """Signed in as `email`, on the notification settings."""
    page.goto(live_site.url + "/auth/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard")
    page.goto(live_site.url + "/settings/notifications/")


def test_settings_save_on_change_and_show_saved(live_site):
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context().new_page()
        page.goto(live_site.url + "/auth/register")
        page.fill("#email", "prefs@example.com")
        page.fill("#password", PASSWORD)
        page.fill("#confirm", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/auth/login")  # signing up does not sign in: log in next
        page.fill("#email", "prefs@example.com")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/dashboard")
        page.goto(live_site.url + "/settings/notifications/")
        page.check("#sms_risk_violations")
        expect(page.locator("#status-sms_risk_violations")).to_have_text("Saved")
        for _ in range(2):  # the field says it is in error, then that it is not, twice over
            page.fill("#phone", "12345")
            page.press("#phone", "Tab")
            expect(page.locator("#status-phone")).to_contain_text("international format")
            expect(page.locator("#phone")).to_have_attribute("aria-invalid", "true")
            expect(page.locator("#phone")).to_have_attribute("aria-describedby",
                                                             "phone-hint status-phone")
            page.fill("#phone", "+14155550123")
            page.press("#phone", "Tab")
            expect(page.locator("#status-phone")).to_have_text("Saved")
            expect(page.locator("#phone")).not_to_have_attribute("aria-invalid", "true")
        page.fill("#timezone", "Europe/Berlin")
        page.press("#timezone", "Tab")
        expect(page.locator("#status-timezone")).to_have_text("Saved")
        page.fill("#strategy_id", "grid-eth")
        page.click("#strategies button[type=submit]")
        expect(page.locator("#follows")).to_contain_text("grid-eth")
        browser.close()
    pref = saved_preferences(live_site.app, "prefs@example.com")
    assert (pref.sms_risk_violations, pref.phone, pref.timezone) == (
        True, "+14155550123", "Europe/Berlin")


def test_the_types_that_insist_save_as_they_are_ticked_twice_over(live_site):
    live_site.user("insist@example.com", PASSWORD)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context().new_page()
        settings_page(page, live_site, "insist@example.com")
        expect(page.locator("#insist-RISK_LIMIT_BREACHED")).to_be_checked()
        def tick(box, on):
            """Tick or untick one box and wait for its own "Saved" (the line is blanked first)."""
            page.evaluate("document.querySelector('#status-insist_types').textContent = ''")
            (page.check if on else page.uncheck)(f"#insist-{box}")
            expect(page.locator("#status-insist_types")).to_have_text("Saved")
            expect(page.locator("#status-insist_types")).to_have_count(1)
            return saved_preferences(live_site.app, "insist@example.com").insist_types

        for _ in range(2):  # the same moves twice without a reload
            assert "PRICE_ALERT" in tick("PRICE_ALERT", True)
            assert "PRICE_ALERT" not in tick("PRICE_ALERT", False)
            assert "RISK_LIMIT_BREACHED" not in tick("RISK_LIMIT_BREACHED", False)
            assert "RISK_LIMIT_BREACHED" in tick("RISK_LIMIT_BREACHED", True)
        page.fill("#insist_every_min", "0")
        page.press("#insist_every_min", "Tab")
        expect(page.locator("#status-insist_every_min")).to_contain_text("between 1 and 1440")
        page.fill("#insist_every_min", "2")
        page.press("#insist_every_min", "Tab")
        expect(page.locator("#status-insist_every_min")).to_have_text("Saved")
        browser.close()
    pref = saved_preferences(live_site.app, "insist@example.com")
    assert pref.insist_every_min == 2 and "RISK_LIMIT_BREACHED" in pref.insist_types


def test_a_change_refused_as_stale_says_to_reload_and_shows_what_is_saved(live_site):
    """A tab left open past its sign-in: the server refuses the change (CSRF); the box goes
    back to what is saved and the page says what to do, for each of two tries."""
    live_site.user("stale@example.com", PASSWORD)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context().new_page()
        settings_page(page, live_site, "stale@example.com")
        box = page.locator("#sms_risk_violations")
        saved = box.is_checked()
        page.evaluate("""() => {  // what a stale tab holds: a token of another sign-in
            document.body.setAttribute('hx-headers', JSON.stringify({'X-CSRFToken': 'stale'}));
            document.querySelectorAll('[name=csrf_token]').forEach((i) => { i.value = 'stale'; });
        }""")
        for _ in (1, 2):
            page.evaluate("document.querySelectorAll('#flashes .flash-error')"
                          ".forEach((f) => f.classList.add('said-before'))")
            box.click()
            # said anew each time, the earlier copy replaced rather than piled up
            error = page.locator("#flashes .flash-error:not(.said-before)")
            expect(error).to_contain_text("reload it")
            expect(page.locator("#flashes .flash-error")).to_have_count(1)
            expect(box).to_be_checked(checked=saved)
        browser.close()
    assert saved_preferences(live_site.app, "stale@example.com").sms_risk_violations == saved
