"""Channels and a message template in Chromium: chosen in the create form and in a row's
edit form, twice in a row without a reload, the markup sound after every swap."""

import pytest

from tests.live_server import skip_without_chromium

pytestmark = pytest.mark.browser

skip_without_chromium()

from playwright.sync_api import expect  # noqa: E402

from tests.journeys import PASSWORD, WAIT_MS, signed_in, sound  # noqa: E402
from tests.test_accessibility import _violations  # noqa: E402
from webapp.core import secretbox  # noqa: E402
from webapp.extensions import db  # noqa: E402
from webapp.models import Alert, Destination  # noqa: E402

EMAIL = "routes@example.com"
FORM = "#alert-form"


@pytest.fixture
def site(live_site):
    uid = live_site.user(EMAIL, PASSWORD)
    with live_site.app.app_context():
        db.session.add(Destination(user_id=uid, kind="webhook", name="Trading desk",
                                   url_masked="https://desk.example/…",
                                   url_encrypted=secretbox.encrypt("https://desk.example/h")))
        db.session.commit()
    return live_site, uid


def stored(site, uid, symbol):
    app = site.app
    with app.app_context():
        alert = db.session.scalar(db.select(Alert).where(Alert.user_id == uid,
                                                         Alert.symbol == symbol))
        db.session.remove()
        return alert.channels, alert.message


def create(page, symbol, channels, message):
    """Fill the create form: only `channels` (labels) and `message`; then submit."""
    form = page.locator(FORM)
    form.locator("#symbol").fill(symbol)
    form.locator("#price").fill("65000")
    form.get_by_label("Which channels").select_option("chosen")
    for label in channels:
        form.get_by_label(label, exact=True).check()
    form.locator("#message").fill(message)
    form.get_by_role("button", name="Add alert").click()


def test_channels_and_a_template_are_chosen_in_the_forms_twice_without_a_reload(site):
    site, uid = site
    with signed_in(site, EMAIL, "/alerts/") as page:
        form = page.locator(FORM)
        expect(form.get_by_label("Which channels")).to_have_value("preferences")
        expect(form.get_by_label("Trading desk")).to_be_visible()

        create(page, "BTCUSDT", ["Email", "Trading desk"], "{{ symbol }} at {{ nope }}")
        expect(page.locator("#message-error")).to_contain_text("unknown placeholder nope",
                                                               timeout=WAIT_MS)
        sound(page)
        expect(form.get_by_label("Trading desk")).to_be_checked()  # kept across the swap
        form.locator("#message").fill("{{ symbol }} hit {{ price | round(1) }}")
        form.get_by_role("button", name="Add alert").click()
        row = page.locator("#alert-rows tr", has_text="BTCUSDT")
        expect(row).to_contain_text("to: Email, Trading desk", timeout=WAIT_MS)
        sound(page)
        expect(form.get_by_label("Which channels")).to_have_value("preferences")  # fresh
        desk = stored(site, uid, "BTCUSDT")[0][1]
        assert stored(site, uid, "BTCUSDT") == (["email", desk], "{{ symbol }} hit "
                                                "{{ price | round(1) }}")

        create(page, "ETHUSDT", [], "{% if note %}{{ note }}{% endif %}")  # inbox only
        expect(page.locator("#alert-rows tr", has_text="ETHUSDT")).to_contain_text(
            "to: inbox only", timeout=WAIT_MS)
        sound(page)
        assert stored(site, uid, "ETHUSDT") == ([], "{% if note %}{{ note }}{% endif %}")

        for round_ in range(2):  # the row's edit form, twice
            row = page.locator("#alert-rows tr", has_text="BTCUSDT")
            row.get_by_role("link", name="Edit").click()
            editing = page.locator("#alert-rows tr.editing")
            expect(editing.get_by_label("Trading desk")).to_be_checked(
                checked=round_ == 0, timeout=WAIT_MS)
            expect(editing.get_by_label("Which channels")).to_have_value("chosen")
            sound(page)
            editing.get_by_label("Which channels").select_option("chosen")
            editing.get_by_label("SMS", exact=True).check()
            editing.get_by_label("Trading desk").set_checked(round_ == 1)
            editing.get_by_label("Notification message").fill(f"round {round_}: {{{{ pct }}}}")
            editing.get_by_role("button", name="Save").click()
            expected = "to: Email, SMS" + (", Trading desk" if round_ else "")
            expect(page.locator("#alert-rows tr", has_text="BTCUSDT")).to_contain_text(
                expected, timeout=WAIT_MS)
            sound(page)
        assert stored(site, uid, "BTCUSDT") == (["email", "sms", desk], "round 1: {{ pct }}")

        row = page.locator("#alert-rows tr", has_text="BTCUSDT")
        row.get_by_role("link", name="Edit").click()
        editing = page.locator("#alert-rows tr.editing")
        editing.get_by_label("Which channels").select_option("preferences",
                                                             timeout=WAIT_MS)
        editing.get_by_role("button", name="Save").click()  # ticks left: refused, not lost
        expect(editing.locator("small.error")).to_contain_text("only the ticked",
                                                              timeout=WAIT_MS)
        sound(page)
        assert _violations(page) == []  # the choices and their error, read out
        for label in ("Email", "SMS", "Trading desk"):
            editing.get_by_label(label, exact=True).uncheck()
        editing.get_by_role("button", name="Save").click()
        expect(page.locator("#alert-rows tr.editing")).to_have_count(0, timeout=WAIT_MS)
        expect(page.locator("#alert-rows tr", has_text="BTCUSDT")).not_to_contain_text("to:")
        sound(page)
        assert stored(site, uid, "BTCUSDT")[0] is None
