"""The operations page walked in Chromium: axe-core content at both widths with the page full
(an open breaker, deliveries, failed jobs), then two failed jobs retried one after the other
without a reload (each leaves the table, the queue gains it), the markup sound after each."""

from datetime import timedelta

import pytest

from tests.hub import run_jobs
from tests.live_server import launch_chromium, skip_without_chromium
from tests.test_ops_page import explode
from webapp import clock
from webapp.accounts import service as accounts
from webapp.core.queues import enqueue, get_queue
from webapp.delivery.dispatch import breaker as delivery_breaker
from webapp.extensions import db
from webapp.models import DeliveryLog, DeliveryStatus

pytestmark = pytest.mark.browser

skip_without_chromium()

from playwright.sync_api import expect, sync_playwright  # noqa: E402

from tests.journeys import PASSWORD, WAIT_MS, signed_in, sound  # noqa: E402
from tests.test_accessibility import WIDTHS, _violations  # noqa: E402

EMAIL = "ops-walker@example.com"
LONG_REASON = ("http://127.0.0.1:9/api/v3/exchangeInfo?permissions=SPOT&symbolStatus=TRADING"
               "&showPermissionSets=false&symbols=BTCUSDT,ETHUSDT,SOLUSDT,BNBUSDT,XRPUSDT")


@pytest.fixture(scope="module")
def site(make_live_site):
    """A site of its own (its failed jobs and breakers are everyone's), full of facts."""
    site = make_live_site("ops")
    with site.app.app_context():
        uid = accounts.create_user(EMAIL, PASSWORD, is_admin=True).id
        ago = clock.utcnow() - timedelta(minutes=20)
        outcomes = [("email", DeliveryStatus.SENT)] * 3 + [
            ("email", DeliveryStatus.FAILED), ("sms", DeliveryStatus.FAILED)]
        db.session.add_all(DeliveryLog(notification_id=f"n-{i}", user_id=uid, channel=channel,
                                       status=outcome, created_at=ago, updated_at=ago)
                           for i, (channel, outcome) in enumerate(outcomes))
        db.session.commit()
        gate = delivery_breaker("sms")
        for _ in range(gate.threshold):
            gate.failure("Twilio answered 503")
        # the second's error holds a long URL, as a failed fetch's does: it must wrap on a phone
        site.jobs = [enqueue(explode, reason).id for reason in ("first", LONG_REASON)]
    run_jobs(site.app)
    return site

# A button in a table whose own words break over lines: each text node's line boxes
BROKEN_BUTTONS = """() => [...document.querySelectorAll('td button')].filter((button) =>
  [...button.childNodes].some((node) => {
    if (node.nodeType !== Node.TEXT_NODE || !node.textContent.trim()) return false;
    const range = document.createRange();
    range.selectNodeContents(node);
    return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size > 1;
  })).map((button) => button.textContent.trim())"""


def _retry(page, job_id):
    row = page.locator("#ops tr", has_text=job_id)
    row.get_by_role("button", name=f"Retry job {job_id}").click()
    expect(page.locator("#ops .flash-success")).to_have_text(f"Job {job_id} is queued again.",
                                                             timeout=WAIT_MS)
    expect(page.locator("#ops tr", has_text=job_id)).to_have_count(0)
    expect(page.locator("#ops .flash-success")).to_be_focused()  # its button is gone
    sound(page)


@pytest.mark.parametrize("width", WIDTHS)
def test_the_full_page_passes_axe_and_fits_the_screen(site, width):
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context(viewport=WIDTHS[width]).new_page()
        page.goto(site.url + "/auth/login")
        page.fill("#email", EMAIL)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/dashboard")
        page.goto(site.url + "/admin/ops")
        expect(page.locator("svg.rate-chart").first).to_be_visible()
        assert _violations(page) == []
        assert page.evaluate("document.documentElement.scrollWidth") <= WIDTHS[width]["width"]
        assert page.evaluate(BROKEN_BUTTONS) == []  # "Retr / y" in a narrow column
        browser.close()


def test_two_failed_jobs_retried_in_a_row_without_a_reload(site):
    with signed_in(site, EMAIL, "/admin/ops") as page:
        expect(page.get_by_role("heading", name="Operations")).to_be_visible()
        expect(page.locator("#ops")).to_contain_text("breaker open: delivery-sms")
        for job_id in site.jobs:
            expect(page.locator("#ops tr", has_text=job_id)).to_contain_text(
                "RuntimeError: provider said no")
        first, second = site.jobs
        # the refresh every 10 s (swapped now, as it swaps) leaves a keyboard user's focus be
        button = page.get_by_role("button", name=f"Retry job {second}")
        button.focus()
        page.evaluate("htmx.ajax('GET', '/admin/ops', {source: '#ops', target: '#ops', "
                      "swap: 'outerHTML'})")
        expect(page.locator("#ops .flash-success")).to_have_count(0)
        page.wait_for_timeout(300)  # the swap settles
        expect(button).to_be_focused()
        # the focused job retried elsewhere: the refresh hands its focus to no other job's
        # Retry, where Enter would retry a job nobody chose
        with site.app.app_context():
            registry = get_queue("default").failed_job_registry
            registry.remove(second)
        page.evaluate("htmx.ajax('GET', '/admin/ops', {source: '#ops', target: '#ops', "
                      "swap: 'outerHTML'})")
        expect(page.locator("#ops tr", has_text=second)).to_have_count(0, timeout=WAIT_MS)
        page.wait_for_timeout(300)
        assert page.evaluate("document.activeElement.tagName") != "BUTTON"
        with site.app.app_context():  # back as it was, for the rest
            site.jobs[1] = enqueue(explode, "second").id
        run_jobs(site.app)
        second = site.jobs[1]
        page.evaluate("htmx.ajax('GET', '/admin/ops', {source: '#ops', target: '#ops', "
                      "swap: 'outerHTML'})")
        expect(page.locator("#ops tr", has_text=second)).to_have_count(1, timeout=WAIT_MS)
        _retry(page, first)
        expect(page.locator("#ops tr", has_text=second)).to_have_count(1)
        _retry(page, second)
        expect(page.locator("#ops")).to_contain_text("No failed jobs.")
    with site.app.app_context():
        assert set(site.jobs) <= set(get_queue("default").job_ids)
