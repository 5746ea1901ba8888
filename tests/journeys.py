"""What every browser journey checks after each swap, and how a journey starts and ends.

A journey walks a page as a user does, twice in a row without a reload; after every swap
the markup must still be sound: no duplicate ids, every form's fields inside it, tables and
lists holding only rows and items, nothing left mid-request, and still the same document.
"""

from contextlib import contextmanager

import redis
from playwright.sync_api import expect, sync_playwright

from tests.live_server import launch_chromium
from webapp import keys

PASSWORD = "correct horse battery"
WAIT_MS = 15_000

MARKUP_PROBLEMS = """() => {
  const problems = [];
  const seen = new Map();
  for (const el of document.querySelectorAll('[id]')) seen.set(el.id, (seen.get(el.id) || 0) + 1);
  for (const [id, n] of seen) if (n > 1) problems.push(`${n} elements with id ${id}`);
  for (const form of document.forms) {
    if (!form.querySelector('input, select, textarea, button')) {
      problems.push(`an empty form (${form.id || form.getAttribute('action') || 'no action'})`);
    }
  }
  // A form parsed where it may not stand (in a table) keeps its fields' ownership but not
  // the fields: they land outside it.
  for (const field of document.querySelectorAll('input, select, textarea')) {
    const name = field.name || field.id || field.type;
    if (!field.form) problems.push(`${name} outside any form`);
    else if (!field.hasAttribute('form') && !field.form.contains(field)) {
      problems.push(`${name} outside its form`);
    }
  }
  for (const body of document.querySelectorAll('tbody')) {
    for (const child of body.children) {
      if (child.tagName !== 'TR') problems.push(`a ${child.tagName} in a table body`);
    }
  }
  for (const list of document.querySelectorAll('ul, ol')) {
    for (const child of list.children) {
      if (!['LI', 'TEMPLATE', 'SCRIPT'].includes(child.tagName)) {
        problems.push(`a ${child.tagName} in a list (${list.id || list.className})`);
      }
    }
  }
  return problems;
}"""
UNSETTLED = ".htmx-request, .htmx-swapping, .htmx-settling"


@contextmanager
def signed_in(site, email, path):
    """A fresh Chromium signed in as `email`, on `path`, marked so a reload shows."""
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_context().new_page()
            page.on("dialog", lambda dialog: dialog.accept())  # confirmations
            page.goto(site.url + "/auth/login")
            page.fill("#email", email)
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url("**/dashboard")
            if path != "/dashboard":
                page.goto(site.url + path)
            page.evaluate("window.__sameDocument = true")
            yield page
            assert page.evaluate("window.__sameDocument") is True, "the page reloaded"
        finally:
            browser.close()


def sound(page):
    """Once htmx has settled, the markup has none of the problems a bad swap leaves."""
    expect(page.locator(UNSETTLED)).to_have_count(0, timeout=WAIT_MS)
    problems = page.evaluate(MARKUP_PROBLEMS)
    assert problems == [], problems
    assert page.evaluate("window.__sameDocument") is True, "the page reloaded"


def unread_from_api(page, site):
    """The unread count the JSON API gives this browser's session."""
    response = page.request.get(site.url + "/api/v1/notifications?limit=1")
    assert response.ok, response.status
    return int(response.headers["x-unread-count"])


def badge_matches_api(page, site):
    """The nav badge shows what the API counts (the badge may still be on its way)."""
    expect(page.locator("#unread-badge")).to_have_attribute(
        "data-count", str(unread_from_api(page, site)), timeout=WAIT_MS)


def step_done(page, site):
    """After a step: sound markup, and a nav badge that agrees with the API."""
    sound(page)
    badge_matches_api(page, site)


def publish_tick(site, symbol, price, ts_ms):
    """A trade as the matcher's script records and publishes it (worker/match/): the last
    price in keys.price(symbol), then the JSON on keys.ticks_channel(symbol), price as text."""
    with redis.Redis.from_url(site.app.config["REDIS_URL"]) as r:
        r.hset(keys.price(symbol), mapping={"price": price, "ts": ts_ms})
        r.publish(keys.ticks_channel(symbol),
                  f'{{"symbol":"{symbol}","price":{price},"ts":{ts_ms}}}')
