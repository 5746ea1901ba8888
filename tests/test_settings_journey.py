"""The settings pages walked as a user walks them, each twice in a row without a reload, in
Chromium: notification settings that save as they change (bad values, then fixed), strategy
follows (a refused id, then fixed), API keys (a bad name, then a key shown once and revoked)
and the password (a wrong current one, then the right one). After every step the markup is
sound and the nav badge says what the API counts."""

import re

import pytest
import requests

from tests.live_server import skip_without_chromium
from webapp.preferences import service as preferences

pytestmark = pytest.mark.browser

skip_without_chromium()

from playwright.sync_api import expect  # noqa: E402

from tests.journeys import PASSWORD, WAIT_MS, signed_in, step_done  # noqa: E402

TOGGLES = ("rt_order_execution", "sms_risk_violations", "email_daily_summary")


def _saved_preferences(site, uid):
    with site.app.app_context():
        pref = preferences.preferences_for(uid)
        return {name: getattr(pref, name) for name in (*TOGGLES, "quiet_start", "quiet_end",
                                                        "timezone")}


def _answered(page, name, change, text):
    """Make a change to one setting and wait for its own answer (a fresh status line)."""
    page.eval_on_selector(f"#status-{name}", "e => e.dataset.before = '1'")
    change()
    status = page.locator(f"#status-{name}:not([data-before])")
    expect(status).to_contain_text(text, timeout=WAIT_MS)
    return status


def _set_text(page, name, value, answer):
    def change():
        page.fill(f"#{name}", value)
        page.press(f"#{name}", "Tab")
    status = _answered(page, name, change, answer)
    expect(status).to_have_class(re.compile(r"\bsaved\b" if answer == "Saved" else r"\berror\b"))


def _walk_preferences(page, site, uid, zone, quiet):
    for name in TOGGLES:
        _answered(page, name, lambda name=name: page.click(f"#{name}"), "Saved")
        step_done(page, site)
    start, end = quiet
    _set_text(page, "quiet_start", start, "Saved")
    _set_text(page, "quiet_end", start, "must end at another time")
    step_done(page, site)
    _set_text(page, "quiet_end", end, "Saved")
    _set_text(page, "timezone", "Mars/Olympus", "Choose a time zone from the list")
    step_done(page, site)
    _set_text(page, "timezone", zone, "Saved")
    step_done(page, site)
    saved = _saved_preferences(site, uid)
    for name in TOGGLES:
        assert saved[name] == page.is_checked(f"#{name}"), name
    assert (saved["quiet_start"], saved["quiet_end"], saved["timezone"]) == (start, end, zone)

    page.fill("#strategy_id", "no spaces allowed!")
    page.get_by_role("button", name="Follow", exact=True).click()
    expect(page.locator("#follows .error")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#strategy_id")).to_have_value("no spaces allowed!")
    expect(page.locator("#strategy_id")).to_have_attribute("aria-invalid", "true")  # its error
    step_done(page, site)
    for strategy in ("momentum-btc", "grid-eth"):
        page.fill("#strategy_id", strategy)
        page.get_by_role("button", name="Follow", exact=True).click()
        expect(page.locator("#follows .chip", has_text=strategy)).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#follows .error")).to_have_count(0)
        expect(page.locator("#strategy_id")).to_have_value("")
        expect(page.locator("#strategy_id")).not_to_have_attribute("aria-invalid", "true")
        step_done(page, site)
    for strategy in ("momentum-btc", "grid-eth"):
        page.get_by_role("button", name=f"Unfollow {strategy}").click()
        expect(page.locator("#follows .chip", has_text=strategy)).to_have_count(0,
                                                                           timeout=WAIT_MS)
        step_done(page, site)
    expect(page.locator("#follows")).to_contain_text("You follow no strategy yet.")
    with site.app.app_context():
        assert preferences.followed(uid) == []


def test_the_notification_settings_journey_twice_without_a_reload(live_site):
    uid = live_site.user("prefs-walker@example.com", PASSWORD)
    with signed_in(live_site, "prefs-walker@example.com", "/settings/notifications/") as page:
        step_done(page, live_site)
        _walk_preferences(page, live_site, uid, "Europe/Berlin", ("22:00", "07:00"))
        _walk_preferences(page, live_site, uid, "Asia/Tokyo", ("23:30", "06:15"))


def _as_key(site, key):
    return requests.get(site.url + "/api/v1/me", headers={"X-API-Key": key}, timeout=10)


def _walk_api_keys(page, site, name):
    page.fill("#name", "")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#name-error")).to_have_text("Name the key.", timeout=WAIT_MS)
    expect(page.locator("#name")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#name")).to_be_focused()  # the field in error, not the page's start
    step_done(page, site)

    page.fill("#name", name)
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-key")).to_be_visible(timeout=WAIT_MS)
    key = page.locator("#new-key").text_content()
    assert _as_key(site, key).json()["email"] == "keys-walker@example.com"
    expect(page.locator("#name-error")).to_have_count(0)
    expect(page.locator("#name")).to_have_value("")  # emptied for the next key
    expect(page.locator("tbody tr", has_text=name)).to_have_count(1)
    # the news has the focus (it went to the page's start): the key, read out at once
    expect(page.locator("#api-keys [role=status]")).to_be_focused(timeout=WAIT_MS)
    expect(page.locator("#toasts .toast").first).to_contain_text(f"API key created: {name}",
                                                                 timeout=WAIT_MS)
    step_done(page, site)

    page.get_by_role("button", name=f"Revoke {name}").click()
    expect(page.locator("tbody tr", has_text=name)).to_have_count(0, timeout=WAIT_MS)
    news = page.locator("#api-keys [role=status]")
    expect(news).to_have_text(f"Key “{name}” revoked: it is refused from now on.")
    expect(news).to_be_focused(timeout=WAIT_MS)
    expect(page.locator("#new-key")).to_have_count(0)  # shown once, never again
    assert _as_key(site, key).status_code == 401
    step_done(page, site)


def test_the_api_keys_journey_twice_without_a_reload(live_site):
    live_site.user("keys-walker@example.com", PASSWORD)
    with signed_in(live_site, "keys-walker@example.com", "/settings/api-keys") as page:
        step_done(page, live_site)
        _walk_api_keys(page, live_site, "trading bot")
        _walk_api_keys(page, live_site, "trading bot")


def test_revoking_one_of_two_keys_of_one_name_leaves_the_focus_on_the_news(live_site):
    """Their buttons had one name: the focus went on to the other key's Revoke, where a
    second Enter revoked it too."""
    live_site.user("twins@example.com", PASSWORD)
    with signed_in(live_site, "twins@example.com", "/settings/api-keys") as page:
        for _ in range(2):
            page.fill("#name", "bot")
            page.get_by_role("button", name="Create key").click()
            expect(page.locator("#api-keys [role=status]")).to_be_focused(timeout=WAIT_MS)
        revokes = page.get_by_role("button", name="Revoke bot")
        expect(revokes).to_have_count(2)
        revokes.first.focus()
        page.keyboard.press("Enter")
        expect(revokes).to_have_count(1, timeout=WAIT_MS)
        expect(page.locator("#api-keys [role=status]")).to_be_focused(timeout=WAIT_MS)
        page.keyboard.press("Enter")  # on the news: nothing more is revoked
        page.wait_for_timeout(500)
        expect(revokes).to_have_count(1)
        step_done(page, live_site)

def _change_password(page, current, new):
    page.fill("#current_password", current)
    page.fill("#new_password", new)
    page.fill("#confirm", new)
    page.get_by_role("button", name="Change password").click()


def _walk_password(page, site, current, new):
    _change_password(page, "not my password", new)
    expect(page.locator("#current_password-error")).to_have_text(
        "That is not your current password.", timeout=WAIT_MS)
    step_done(page, site)

    _change_password(page, current, new)
    expect(page.locator("#flashes")).to_contain_text("Password changed.", timeout=WAIT_MS)
    expect(page.locator("#current_password-error")).to_have_count(0)
    expect(page.locator("#current_password")).to_have_value("")
    expect(page.locator("#toasts .toast").first).to_contain_text("Your password was changed",
                                                                 timeout=WAIT_MS)
    step_done(page, site)  # the API still knows this session: it was kept


def test_the_password_journey_twice_without_a_reload(live_site):
    live_site.user("password-walker@example.com", PASSWORD)
    with signed_in(live_site, "password-walker@example.com", "/settings/password") as page:
        step_done(page, live_site)
        _walk_password(page, live_site, PASSWORD, "another horse battery")
        _walk_password(page, live_site, "another horse battery", PASSWORD)
