"""The alerts page walked as a user walks it, twice in a row without a reload, in Chromium:
add three alerts, pause, resume and delete them, then send a bad input and fix it. After
every swap the form still holds its fields and the table only rows."""

import pytest

from tests.live_server import LiveServer, launch_chromium, skip_without_chromium
from webapp import accounts, create_app
from webapp.extensions import db
from worker import redisd

pytestmark = pytest.mark.browser

WAIT_MS = 15_000

skip_without_chromium()

from playwright.sync_api import expect, sync_playwright  # noqa: E402

# The markup a swap must leave behind: every field of the form inside the <form>, and
# nothing but rows in the table body.
MARKUP_PROBLEMS = """() => {
  const problems = [];
  const form = document.querySelector('#alert-form');
  if (!form) return ['no #alert-form'];
  for (const name of ['symbol', 'type', 'price', 'mode', 'buffer', 'expires_at', 'note',
                      'csrf_token']) {
    if (!form.querySelector(`[name="${name}"]`)) problems.push(`${name} outside the form`);
  }
  if (document.querySelectorAll('#alert-form').length !== 1) problems.push('two forms');
  for (const child of document.querySelector('#alert-rows').children) {
    if (child.tagName !== 'TR') problems.push(`a ${child.tagName} in the table body`);
  }
  const ids = [...document.querySelectorAll('[id]')].map(e => e.id);
  if (new Set(ids).size !== ids.length) problems.push('duplicate ids');
  return problems;
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("alerts-journey")
    redis_process, redis_url = redisd.start(tmp / "redis", appendonly=False)
    db_url = f"sqlite:///{tmp / 'journey.db'}"
    config = {"SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": redis_url,
              "SECRET_KEY": "journey-secret", "INSTANCE_PATH": str(tmp)}
    app = create_app(config)
    with app.app_context():
        db.create_all()
        accounts.create_user("walker@example.com", "correct horse battery")
        db.engine.dispose()
    env = {"DATABASE_URL": db_url, "REDIS_URL": redis_url, "SECRET_KEY": "journey-secret",
           "INSTANCE_PATH": str(tmp)}
    live = LiveServer(env, tmp / "gunicorn.log").start()
    yield live
    live.stop()
    redisd.stop(redis_process)


@pytest.fixture
def page(server):
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_context().new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # the delete confirmation
        page.goto(server.url + "/auth/login")
        page.fill("#email", "walker@example.com")
        page.fill("#password", "correct horse battery")
        page.click("button[type=submit]")
        page.wait_for_url("**/dashboard")
        yield page
        browser.close()


def _markup_is_sound(page):
    assert page.evaluate(MARKUP_PROBLEMS) == []


def _add(page, symbol, price, note=""):
    page.fill("#symbol", symbol)
    page.fill("#price", price)
    page.fill("#note", note)
    page.click("#alert-form button[type=submit]")
    row = page.locator("#alert-rows tr", has_text=symbol.upper())
    expect(row).to_have_count(1, timeout=WAIT_MS)
    expect(page.locator("#symbol")).to_have_value("")
    _markup_is_sound(page)
    return row


def _walk(page, symbols):
    rows = [_add(page, symbol, price) for symbol, price in symbols]
    for row in rows:
        row.get_by_role("button", name="Pause").click()
        expect(row).to_contain_text("paused", timeout=WAIT_MS)
        _markup_is_sound(page)
        row.get_by_role("button", name="Resume").click()
        expect(row).to_contain_text("active", timeout=WAIT_MS)
        _markup_is_sound(page)
    for (symbol, _), row in zip(symbols, rows, strict=True):
        row.get_by_role("button", name="Delete").click()
        expect(page.locator("#alert-rows tr", has_text=symbol)).to_have_count(0,
                                                                             timeout=WAIT_MS)
        _markup_is_sound(page)
    # a bad input, then the same form fixed
    page.fill("#symbol", "B")
    page.fill("#price", "-1")
    page.click("#alert-form button[type=submit]")
    expect(page.locator("#symbol-error")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#price")).to_have_attribute("aria-invalid", "true")
    _markup_is_sound(page)
    row = _add(page, "SOLUSDT", "150")
    expect(page.locator("#symbol-error")).to_have_count(0)
    row.get_by_role("button", name="Delete").click()
    expect(page.locator("#alert-rows tr", has_text="SOLUSDT")).to_have_count(0, timeout=WAIT_MS)
    _markup_is_sound(page)


def test_the_whole_alerts_journey_twice_without_a_reload(page, server):
    page.goto(server.url + "/alerts/")
    page.evaluate("window.__sameDocument = true")
    symbols = [("BTCUSDT", "65000"), ("ETHUSDT", "2500"), ("BNBUSDT", "600")]
    _walk(page, symbols)
    _walk(page, symbols)
    assert page.evaluate("window.__sameDocument") is True  # all without a reload
