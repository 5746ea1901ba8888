"""A real Chromium on /settings/destinations: add, test, switch on, delete, each an HTMX swap
of the one panel, several in a row without a reload; axe after the swaps."""

import hashlib
import hmac
import json

import pytest
import requests

from tests.hub import run_jobs
from tests.live_server import launch_chromium, login, skip_without_chromium
from tests.test_accessibility import AXE

pytestmark = pytest.mark.browser
PASSWORD = "correct horse battery"

skip_without_chromium()

from playwright.sync_api import expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def site(make_live_site):
    """Loopback receivers allowed; one failed delivery switches a destination off."""
    site = make_live_site("destinations", env={"DESTINATIONS_ALLOW_PRIVATE": "true",
                                               "DESTINATION_MAX_FAILURES": "1"})
    # The test's own app runs the jobs (as `flask worker` would): the same settings.
    site.app.config.update(DESTINATIONS_ALLOW_PRIVATE=True, DESTINATION_MAX_FAILURES=1)
    return site


def log_in(page, site, email):
    site.user(email, PASSWORD)
    page.goto(site.url + "/auth/login")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard")


def serious_violations(page):
    """In the panel the swaps replace (the whole page is test_accessibility's: here a live
    toast, e.g. this user's "switched off" notice, may or may not have arrived yet)."""
    page.add_script_tag(content=AXE)
    return page.evaluate("""async () => {
        const result = await axe.run('#destinations', {resultTypes: ['violations']});
        return result.violations.filter(v => ['serious', 'critical'].includes(v.impact))
          .map(v => `${v.id}: ${v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(' | ')}`);
    }""")


def add(page, kind, name, url):
    page.select_option("#dest-kind", kind)
    page.fill("#dest-name", name)
    page.fill("#dest-url", url)
    page.click("#destination-form button[type=submit]")


def row(page, name):
    return page.locator("#destination-list tbody tr", has_text=name)


def check_panel(page, rows):
    """After a swap: one panel, its form, and exactly these rows, in order."""
    expect(page.locator("#destinations")).to_have_count(1)
    expect(page.locator("#destination-form")).to_have_count(1)
    names = page.locator("#destination-list tbody tr td[data-label=Name]")
    expect(names).to_have_text(rows)


def signed_item(request, secret):
    timestamp = request["headers"]["x-tickerbell-timestamp"]
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + request["body"], hashlib.sha256)
    assert request["headers"]["x-tickerbell-signature"] == f"sha256={mac.hexdigest()}"
    return json.loads(request["body"])


def test_add_test_switch_on_and_delete_without_reloading(site, http_recorder):
    receiver = http_recorder(status=200)
    port = receiver.server_address[1]
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context().new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # hx-confirm before a delete
        log_in(page, site, "dest-browser@example.com")
        page.goto(site.url + "/settings/destinations/")
        expect(page.locator("#destination-list")).to_contain_text("No destinations yet.")
        page.evaluate("window.notReloaded = true")

        add(page, "webhook", "Desk <hook>", f"{receiver.url}/in/s3cret-path")
        expect(page.locator("#new-secret")).to_be_visible()
        secret = page.locator("#new-secret").inner_text().strip()
        check_panel(page, ["Desk <hook>"])
        expect(row(page, "Desk <hook>")).to_contain_text(f"http://127.0.0.1:{port}/…")
        assert "s3cret-path" not in page.content()

        add(page, "apprise", "Phone ntfy", f"ntfy://127.0.0.1:{port}/desk-alerts")
        expect(page.locator("#destinations-notice")).to_contain_text("Added Phone ntfy.")
        expect(page.locator("#new-secret")).to_have_count(0)  # shown once, then never
        check_panel(page, ["Desk <hook>", "Phone ntfy"])
        assert serious_violations(page) == []

        add(page, "webhook", "", "https://")  # errors come back in the same panel
        expect(page.locator("#dest-name")).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#dest-name-error")).to_contain_text("name")
        expect(page.locator("#dest-url-error")).to_be_visible()
        check_panel(page, ["Desk <hook>", "Phone ntfy"])

        page.click("button[aria-label='Send test: Desk <hook>']")
        expect(page.locator("#destinations-notice")).to_contain_text(
            "Test sent to Desk <hook>: HTTP 200.")
        # the whole panel was swapped: the focus stays on the same button, not the form's top
        expect(page.locator("button[aria-label='Send test: Desk <hook>']")).to_be_focused()
        item = signed_item(receiver.wait_for(1)[0], secret)
        assert item["type"] == "TEST" and "Desk <hook>" in item["message"]

        page.click("button[aria-label='Send test: Phone ntfy']")
        expect(page.locator("#destinations-notice")).to_contain_text("Test sent to Phone ntfy")
        assert "Test from Tickerbell" in receiver.wait_for(2)[1]["body"].decode()

        receiver.failures = 1  # one failure is the limit on this site: switched off
        page.click("button[aria-label='Send test: Desk <hook>']")
        expect(page.locator("#destinations-notice")).to_contain_text("503")
        expect(row(page, "Desk <hook>")).to_contain_text("switched off")
        assert serious_violations(page) == []
        page.click("button[aria-label='Switch on again: Desk <hook>']")
        expect(page.locator("#destinations-notice")).to_contain_text("Desk <hook> is on again.")
        expect(row(page, "Desk <hook>")).not_to_contain_text("switched off")
        expect(page.locator("button[aria-label='Switch on again: Desk <hook>']")).to_have_count(0)

        page.click("button[aria-label='Delete: Desk <hook>']")
        expect(page.locator("#destinations-notice")).to_contain_text("Deleted Desk <hook>.")
        expect(page.locator("#destinations-notice .flash")).to_be_focused()  # its button gone
        check_panel(page, ["Phone ntfy"])
        page.click("button[aria-label='Delete: Phone ntfy']")
        expect(page.locator("#destination-list")).to_contain_text("No destinations yet.")
        check_panel(page, [])
        assert page.evaluate("window.notReloaded") is True
        assert serious_violations(page) == []
        browser.close()
    assert len(receiver.requests) == 3


@pytest.mark.parametrize("width", [{"width": 375, "height": 812}])
def test_a_full_panel_passes_axe_at_phone_width(site, http_recorder, width):
    receiver = http_recorder(status=200)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context(viewport=width).new_page()
        log_in(page, site, "dest-phone@example.com")
        page.goto(site.url + "/settings/destinations/")
        add(page, "webhook", "Phone hook", f"{receiver.url}/hook")
        expect(page.locator("#new-secret")).to_be_visible()
        assert serious_violations(page) == []
        browser.close()


def test_an_outside_client_adds_destinations_and_counts_what_arrives(site, http_recorder):
    """Over HTTP only: an API key adds a webhook and a json:// destination, a service posts
    events, the worker delivers; each receiver counts its own and checks the signatures."""
    hooks, apprise_in = http_recorder(status=200), http_recorder(status=200)
    uid = site.user("outside@example.com", PASSWORD)
    session = login(site.url, "outside@example.com", PASSWORD)
    with site.app.app_context():
        from webapp.accounts import service as accounts
        from webapp.extensions import db
        from webapp.models import User
        from webapp.notify import service_tokens

        key = accounts.create_api_key(db.session.get(User, uid), "outside")[1]
        service = service_tokens.create("outside-feed")[1]
    session.close()
    api = requests.Session()
    api.headers["X-API-Key"] = key
    made = api.post(site.url + "/api/v1/destinations", json={
        "kind": "webhook", "name": "desk", "url": f"{hooks.url}/in",
        "types": ["ORDER_EXECUTED"]})
    assert made.status_code == 201, made.text
    secret = made.json()["secret"]
    assert api.post(site.url + "/api/v1/destinations", json={
        "kind": "apprise", "name": "json",
        "url": f"json://127.0.0.1:{apprise_in.server_address[1]}/a"}).status_code == 201
    tested = api.post(site.url + f"/api/v1/destinations/{made.json()['id']}/test").json()
    assert tested["ok"] is True and tested["detail"] == "HTTP 200"
    events = [{"user_id": uid, "type": kind, "title": f"event {n}"}
              for n, kind in enumerate(["ORDER_EXECUTED", "PRICE_ALERT", "ORDER_EXECUTED"])]
    posted = requests.post(site.url + "/api/v1/events", json=events,
                           headers={"X-Service-Token": service})
    assert posted.status_code == 202, posted.text
    run_jobs(site.app)
    got = [signed_item(r, secret) for r in hooks.wait_for(3)]
    assert sorted(item["title"] for item in got) == ["Test from Tickerbell", "event 0", "event 2"]
    titles = sorted(json.loads(r["body"])["title"] for r in apprise_in.wait_for(4))
    assert titles == [  # no types: all the toggles let out, the key's security notice too
        "Account security: API key created: outside", "Order executed: event 0",
        "Order executed: event 2", "Price alert: event 1"]
    listed = api.get(site.url + "/api/v1/destinations").json()
    assert [d["failures"] for d in listed] == [0, 0] and all(d["last_sent_at"] for d in listed)
