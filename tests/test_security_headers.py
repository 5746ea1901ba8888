"""Every answer forbids framing and sniffing, keeps its address out of other sites' Referer,
and is kept by no cache, except our static files; in Chromium the pages still work under
them (an email's preview frame shows, a followed strategy's form empties)."""

import pytest

from tests.live_server import CHROMIUM
from webapp.core.headers import POLICY


def _secured(response):
    assert response.headers["Content-Security-Policy"] == POLICY
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"


@pytest.mark.parametrize("path", ["/auth/login", "/dashboard", "/settings/api-keys",
                                  "/api/v1/alerts", "/no-such-page", "/api/v1/health"])
def test_pages_and_answers_carry_the_headers_and_are_kept_by_no_cache(client, auth, path):
    auth.create()
    auth.login()
    response = client.get(path)
    _secured(response)
    assert response.headers["Cache-Control"] == "no-store"


def test_a_refused_form_and_a_static_file_carry_them_too_and_static_files_may_be_cached(client):
    refused = client.post("/auth/login", data={"email": "x"})  # no CSRF token: 400
    assert refused.status_code == 400
    _secured(refused)
    static = client.get("/static/js/app.js")
    assert static.status_code == 200
    _secured(static)
    assert "no-store" not in static.headers.get("Cache-Control", "")
    static.close()


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="!! /usr/bin/chromium is missing")
def test_the_pages_still_work_under_them_in_chromium(live_site):
    from playwright.sync_api import expect

    from tests.journeys import PASSWORD, WAIT_MS, signed_in

    live_site.user("framed@example.com", PASSWORD)
    with signed_in(live_site, "framed@example.com", "/digest-preview") as page:
        frame = page.frame_locator("iframe.email-preview")
        expect(frame.locator("body")).to_contain_text("Tickerbell", timeout=WAIT_MS)
        page.goto(live_site.url + "/settings/notifications/")
        page.evaluate("window.__sameDocument = true")
        for strategy in ("grid-eth", "momentum-btc"):  # the form empties once it is followed
            page.fill("#strategy_id", strategy)
            page.click("#strategies button[type=submit]")
            expect(page.locator("#follows")).to_contain_text(strategy, timeout=WAIT_MS)
            expect(page.locator("#strategy_id")).to_have_value("")
