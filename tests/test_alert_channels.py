"""An alert's own channels: checked and stored by the API and the page, and a notification
fired by the real matcher goes out on exactly those."""

import json
import time

import pytest

from tests.conftest import csrf_token
from tests.hub import make_user, run_jobs
from webapp.alerts import service as alerts
from webapp.core import secretbox
from webapp.extensions import db, get_redis
from webapp.models import Alert, DeliveryLog, Destination
from worker import slowpath
from worker.matcher import Matcher

ALERT = {"symbol": "BTCUSDT", "type": "above", "price": 100}


@pytest.fixture
def uid(auth):
    return auth.create()


@pytest.fixture
def key(auth, uid):
    return {"X-API-Key": auth.api_key()}


def destination(app, user_id, name, url="http://127.0.0.1:9/hook", enabled=True):
    """A webhook destination written straight to SQL (its own pages are another package's)."""
    with app.app_context():
        dest = Destination(user_id=user_id, kind="webhook", name=name, url_masked="http://…",
                           url_encrypted=secretbox.encrypt(url), types=None, enabled=enabled)
        db.session.add(dest)
        db.session.commit()
        return dest.id


def post(client, body, headers):
    return client.post("/api/v1/alerts", data=json.dumps(body), headers=headers,
                       content_type="application/json")


def patch(client, alert_id, body, headers):
    return client.patch(f"/api/v1/alerts/{alert_id}", data=json.dumps(body), headers=headers,
                        content_type="application/json")


def stored(app, alert_id):
    with app.app_context():
        return db.session.get(Alert, alert_id).channels


def count(app):
    with app.app_context():
        return db.session.scalar(db.select(db.func.count(Alert.id)))


def test_channels_default_to_null_the_preferences_routing(client, key):
    response = post(client, ALERT, key)
    assert response.status_code == 201 and response.get_json()["channels"] is None
    assert client.get("/api/v1/alerts", headers=key).get_json()[0]["channels"] is None


@pytest.mark.both_databases
def test_names_are_stored_as_ids_and_built_ins_as_their_names(app, client, key, uid):
    hook, slack = destination(app, uid, "My Hook"), destination(app, uid, "Slack", enabled=False)
    response = post(client, {**ALERT, "channels": ["Email", " sms ", "My Hook", slack]}, key)
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["channels"] == ["email", "sms", hook, slack]
    assert stored(app, response.get_json()["id"]) == ["email", "sms", hook, slack]
    [listed] = client.get("/api/v1/alerts", headers=key).get_json()
    assert listed["channels"] == ["email", "sms", hook, slack]


def test_an_empty_list_is_kept_as_inbox_only(app, client, key):
    response = post(client, {**ALERT, "channels": []}, key)
    assert response.status_code == 201 and stored(app, response.get_json()["id"]) == []


BAD_CHANNELS = {
    "a string": "email",
    "an object": {"email": True},
    "a number": 3,
    "a bool item": [True],
    "a float item": [1.5],
    "a null item": [None],
    "a nested list": [["email"]],
    "an unknown name": ["Telegram"],
    "an unknown id": [999_999],
    "a negative id": [-1],
    "a huge id": [2**70],
    "a duplicate": ["email", "EMAIL"],
    "a script": ["<script>alert(1)</script>"],
    "a long name": ["x" * 5000],
    "too many": ["email"] * 11,
}


@pytest.mark.parametrize("channels", BAD_CHANNELS.values(), ids=BAD_CHANNELS)
def test_bad_channels_are_refused_naming_the_field_and_nothing_is_written(
        app, client, key, channels):
    response = post(client, {**ALERT, "channels": channels}, key)
    assert response.status_code == 422
    assert set(response.get_json()["detail"]) == {"channels"}
    assert "<script>" not in response.get_data(as_text=True)
    assert count(app) == 0


def test_a_name_and_the_same_destinations_id_are_a_duplicate(app, client, key, uid):
    hook = destination(app, uid, "Hook")
    response = post(client, {**ALERT, "channels": ["Hook", hook]}, key)
    assert response.status_code == 422
    assert "already" in response.get_json()["detail"]["channels"]


def test_a_lone_surrogate_in_a_name_is_refused(app, client, key):
    raw = '{"symbol": "BTCUSDT", "type": "above", "price": 100, "channels": ["\\ud800"]}'
    response = client.post("/api/v1/alerts", data=raw, headers=key,
                           content_type="application/json")
    assert response.status_code == 422 and "surrogate" in response.get_json()["detail"][
        "channels"]
    assert count(app) == 0


def test_another_users_destination_is_refused_by_id_and_by_name(app, client, key):
    other = make_user(app, "other@example.com")
    theirs = destination(app, other, "Their secret desk")
    for channels in ([theirs], ["Their secret desk"]):
        response = post(client, {**ALERT, "channels": channels}, key)
        assert response.status_code == 422, channels
        assert "secret" not in json.dumps(response.get_json())
    assert count(app) == 0


def test_patch_sets_clears_and_keeps_channels(app, client, key, uid):
    hook = destination(app, uid, "Hook")
    alert_id = post(client, ALERT, key).get_json()["id"]
    assert patch(client, alert_id, {"channels": ["push", "Hook"]}, key).get_json()[
        "channels"] == ["push", hook]
    with app.app_context():  # deleted since: an edit of something else still goes through
        db.session.delete(db.session.get(Destination, hook))
        db.session.commit()
    response = patch(client, alert_id, {"note": "still mine"}, key)
    assert response.status_code == 200 and response.get_json()["channels"] == ["push", hook]
    response = patch(client, alert_id, {"channels": ["Hook"]}, key)  # but not named again
    assert response.status_code == 422 and set(response.get_json()["detail"]) == {"channels"}
    assert stored(app, alert_id) == ["push", hook]
    assert patch(client, alert_id, {"channels": None}, key).get_json()["channels"] is None
    assert stored(app, alert_id) is None


def test_patch_of_another_users_alert_is_404(app, client, key):
    other = make_user(app, "other@example.com")
    with app.app_context():
        theirs = alerts.create_alert(other, ALERT).id
    assert patch(client, theirs, {"channels": []}, key).status_code == 404
    assert stored(app, theirs) is None


def test_channels_need_an_api_key(client):
    response = post(client, {**ALERT, "channels": ["email"]}, {})
    assert response.status_code == 401


def form(client, **fields):
    token = csrf_token(client, "/alerts/")
    return {"csrf_token": token, "symbol": "BTCUSDT", "type": "above", "price": "100",
            **fields}


def test_the_form_offers_the_users_destinations_escaped_and_stores_the_ticked(
        app, client, auth, uid):
    hook = destination(app, uid, "<b>desk</b>")
    destination(app, make_user(app, "other@example.com"), "not yours")
    auth.login()
    page = client.get("/alerts/").get_data(as_text=True)
    assert "&lt;b&gt;desk&lt;/b&gt;" in page and "<b>desk" not in page
    assert "not yours" not in page
    assert '<option value="chosen" selected>' not in page
    response = client.post("/alerts/", data=form(client, routing="chosen",
                                                 channels=["email", str(hook)]))
    assert response.status_code == 302
    with app.app_context():
        alert = db.session.scalar(db.select(Alert))
        assert alert.channels == ["email", hook]
    page = client.get("/alerts/").get_data(as_text=True)
    assert "to: Email, &lt;b&gt;desk&lt;/b&gt;" in page
    edit = client.get(f"/alerts/{alert.id}/edit").get_data(as_text=True)
    assert '<option value="chosen" selected>' in edit and f'value="{hook}" checked' in edit
    assert 'value="sms" checked' not in edit


def test_the_form_keeps_inbox_only_and_back_to_the_preferences(app, client, auth, uid):
    auth.login()
    client.post("/alerts/", data=form(client, routing="chosen"))
    with app.app_context():
        alert_id = db.session.scalar(db.select(Alert.id))
    assert stored(app, alert_id) == []
    assert "to: inbox only" in client.get("/alerts/").get_data(as_text=True)
    saved = client.post(f"/alerts/{alert_id}/edit", data={
        **form(client), "mode": "once", "routing": "preferences"}, headers={"HX-Request": "true"})
    assert saved.status_code == 200 and "to:" not in saved.get_data(as_text=True)
    assert stored(app, alert_id) is None


def test_ticks_without_only_the_ticked_channels_are_refused_not_ignored(app, client, auth, uid):
    auth.login()
    response = client.post("/alerts/", data=form(client, routing="preferences",
                                                 channels=["email"]),
                           headers={"HX-Request": "true"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="channels-error"' in page and "only the ticked channels" in page
    assert 'value="email" checked' in page  # the form comes back as it was sent
    assert count(app) == 0


def test_the_form_refuses_another_users_destination_id(app, client, auth, uid):
    theirs = destination(app, make_user(app, "other@example.com"), "theirs")
    auth.login()
    for channel in (str(theirs), "9" * 5000, "\u00b2"):  # "²" is a digit int() refuses
        response = client.post("/alerts/", data=form(client, routing="chosen",
                                                     channels=[channel]))
        assert response.status_code == 422
        assert "no destination" in response.get_data(as_text=True)
    assert count(app) == 0


# A notification fired by the real matcher, through the slow path and the delivery jobs.

def now_ms():
    return int(time.time() * 1000)


def fire(app):
    """A trade at 100 on BTCUSDT fires every alert above 100; the slow path plans them."""
    with app.app_context():
        nids = Matcher(get_redis()).on_price("BTCUSDT", 100, now_ms())
        assert slowpath.drain("test") == len(nids)
    run_jobs(app)
    return nids


def deliveries(app):
    """{alert id: {channel: status}} of every delivery row."""
    with app.app_context():
        rows = db.session.scalars(db.select(DeliveryLog)).all()
    by_nid = {}
    for row in rows:
        by_nid.setdefault(row.notification_id, {})[row.channel] = row.status
    return by_nid


@pytest.fixture
def site(make_app, smtp_server, http_recorder):
    """An app that sends email to a loopback SMTP box and reaches loopback webhooks."""
    app = make_app(SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port, SMTP_TLS="none",
                   DESTINATIONS_ALLOW_PRIVATE=True)
    receiver = http_recorder(status=200)
    uid = make_user(app, "routes@example.com")
    return app, uid, receiver


def test_a_fired_alert_goes_only_to_the_channels_it_names(site, smtp_server):
    app, uid, receiver = site
    hook = destination(app, uid, "Hook", url=receiver.url + "/hook")
    with app.app_context():
        made = {name: alerts.create_alert(uid, {**ALERT, "channels": channels}).id
                for name, channels in (("email", ["email"]), ("hook", ["Hook"]),
                                       ("inbox", []), ("default", None))}
    nids = fire(app)
    assert len(nids) == 4
    with app.app_context():
        from webapp.inbox import service as inbox
        alert_of = {nid: int(inbox.get(uid, nid)["alert_id"]) for nid in nids}
    routed = {alert_of[nid]: channels for nid, channels in deliveries(app).items()}
    assert routed == {made["email"]: {"email": "sent"}, made["hook"]: {f"dest:{hook}": "sent"},
                      made["default"]: {"email": "sent", f"dest:{hook}": "sent"}}
    assert len(smtp_server.wait_for(2)) == 2
    assert len(receiver.wait_for(2)) == 2


def test_a_named_destination_switched_off_since_is_skipped(site):
    app, uid, receiver = site
    hook = destination(app, uid, "Hook", url=receiver.url + "/hook")
    with app.app_context():
        alerts.create_alert(uid, {**ALERT, "channels": ["Hook", "email"]})
        db.session.get(Destination, hook).enabled = False
        db.session.commit()
    fire(app)
    assert [set(channels) for channels in deliveries(app).values()] == [{"email"}]
