"""Inbound webhooks on a served site: TradingView's posts reach an open stream once, and the
settings page is walked in Chromium (create twice, revoke, no reload)."""

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests

from tests.hub import poll
from tests.live_server import cookie_header, launch_chromium, login, skip_without_chromium
from tests.sse_helpers import open_stream
from webapp.extensions import db
from webapp.hooks import service as hooks

PASSWORD = "correct horse battery"
AXE = (Path(__file__).parent / "vendor" / "axe-4.14.1.min.js").read_text()
TV_JSON = {"title": "BTC breakout 4h", "message": "BTCUSDT crossed 65000",
           "symbol": "BTCUSDT", "price": "65012.5", "strategy": "x"}


def make_hook(site, email, name="TradingView"):
    """A user with one hook; returns the hook's URL on this site."""
    uid = site.user(email, PASSWORD)
    with site.app.app_context():
        url = hooks.create(uid, name)[1]
        db.session.remove()
    return site.url + urlsplit(url).path


def notifications(events, text):
    return [e for e in events if e.get("event") == "notification" and text in e["data"]]


def test_tradingview_posts_reach_an_open_stream_once(live_site):
    url = make_hook(live_site, "tv-stream@example.com")
    cookie = cookie_header(login(live_site.url, "tv-stream@example.com", PASSWORD))
    sock, reader = open_stream(live_site.server.port, cookie)
    try:
        reader.until(lambda events: any("retry" in e for e in events))
        body = json.dumps(TV_JSON)
        sent = [requests.post(url, data=body, headers={"Content-Type": "application/json"},
                              timeout=3) for _ in range(2)]  # TradingView's own deadline
        assert [s.status_code for s in sent] == [202, 202]
        assert sent[1].json() == {"id": sent[0].json()["id"], "duplicate": True}
        text = requests.post(url, data="ETHUSDT Crossing 3100", timeout=3,
                             headers={"Content-Type": "text/plain; charset=utf-8"})
        assert text.status_code == 202
        # the text alert was sent last: once it is here, a second breakout would be too
        events = reader.until(lambda events: notifications(events, "ETHUSDT Crossing 3100"))
    finally:
        sock.close()
    [breakout] = notifications(events, "BTC breakout 4h")
    assert breakout["id"] == sent[0].json()["id"].rsplit("-", 1)[0]
    assert len(notifications(events, "ETHUSDT Crossing 3100")) == 1
    assert len([e for e in events if e.get("event") == "toast"
                and "BTC breakout 4h" in e["data"]]) == 1


def test_the_log_says_who_sent_what_but_never_the_secret(live_site):
    url = make_hook(live_site, "tv-log@example.com")
    token = urlsplit(url).path.rsplit("/", 1)[1]
    sent = requests.post(url, data="SOLUSDT Crossing 150", timeout=3,
                         headers={"Content-Type": "text/plain"})
    nid = sent.json()["id"]
    log_path = live_site.server.log_path
    # the access line is written after the answer: wait for it, bounded
    assert poll(lambda: f'"POST /hooks/{token[:10]}... HTTP/1.1" 202' in log_path.read_text())
    lines = [line for line in log_path.read_text().splitlines() if nid in line]
    assert len(lines) == 1 and "event=hook_received" in lines[0]
    assert f"prefix={token[:10]} " in lines[0] and "ip=127.0.0.1 bytes=20 " in lines[0]
    assert token not in log_path.read_text()


@pytest.fixture
def chromium():
    skip_without_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        yield browser
        browser.close()


def markup_problems(page):
    """One list, ids unique, and no serious axe-core finding: what a bad swap breaks."""
    page.add_script_tag(content=AXE)
    return page.evaluate("""async () => {
        const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
        const problems = ids.filter((id, i) => ids.indexOf(id) !== i).map(id => 'dup #' + id);
        if (document.querySelectorAll('#hooks').length !== 1) problems.push('#hooks count');
        const result = await axe.run(document, {resultTypes: ['violations']});
        return problems.concat(result.violations
            .filter(v => v.impact === 'serious' || v.impact === 'critical').map(v => v.id));
    }""")


@pytest.mark.browser
def test_settings_page_creates_twice_and_revokes_without_a_reload(live_site, chromium):
    from playwright.sync_api import expect

    live_site.user("tv-page@example.com", PASSWORD)
    page = chromium.new_context().new_page()
    page.goto(live_site.url + "/auth/login")
    page.fill("#email", "tv-page@example.com")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard")
    page.click("text=Webhooks in")
    page.wait_for_url("**/settings/hooks")
    expect(page.locator("#hooks tbody")).to_contain_text("No hooks yet.")
    page.evaluate("window.notReloaded = true")
    urls, rows = [], page.locator("#hooks tbody tr[id^=hook-]")
    for count, name in enumerate(("TV <b>one</b>", "TV two"), 1):
        page.fill("#name", name)
        page.click("#hooks button[type=submit]")
        expect(rows).to_have_count(count)  # the swap is in
        expect(page.locator("#new-hook-url")).to_contain_text("/hooks/tbh_")
        urls.append(page.locator("#new-hook-url").inner_text())
        expect(page.locator("#name")).to_have_value("")
        assert markup_problems(page) == []
    assert urls[0] != urls[1]
    expect(rows.first).to_contain_text("TV two")
    expect(rows.last).to_contain_text("TV <b>one</b>")  # shown as text, not markup
    assert urls[0] not in page.content()  # each URL is shown once only
    page.click("button[aria-label^='Revoke TV <b>one</b> (']")
    expect(page.locator("#hooks [role=status]")).to_contain_text("revoked")
    expect(rows).to_have_count(1)
    expect(page.locator("#new-hook-url")).to_have_count(0)
    assert markup_problems(page) == []
    assert page.evaluate("window.notReloaded") is True
    one, two = (live_site.url + urlsplit(u).path for u in urls)
    assert requests.post(one, data="after revoke", timeout=3).status_code == 404
    assert requests.post(two, data="still live", timeout=3).status_code == 202
