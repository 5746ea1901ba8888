"""GET /stream through the app in-process: replay, isolation, events, keep-alive."""

import json
from urllib.parse import quote

import pytest

from tests.conftest import AuthActions
from tests.hub import poll
from tests.sse_helpers import EventReader
from webapp import keys
from webapp.alerts import service as alerts
from webapp.extensions import get_redis
from webapp.inbox import service as inbox
from webapp.live.fanout import KEEPALIVE, Message
from webapp.live.ws import WsState


@pytest.fixture
def app(make_app):
    app = make_app(STREAM_KEEPALIVE_S=0.2)
    yield app
    hub = app.extensions.get("fanout")
    if hub is not None:
        hub.stop()


@pytest.fixture
def users(app):
    """Two logged-in test clients: {'a': (client, uid), 'b': (client, uid)}."""
    out = {}
    for name in ("a", "b"):
        client = app.test_client()
        auth = AuthActions(client, app)
        uid = auth.create(f"{name}@example.com")
        auth.login(f"{name}@example.com")
        out[name] = (client, uid)
    with app.app_context():
        r = get_redis()
        for key in [*r.scan_iter("tb:replay:*"), *r.scan_iter("tb:read:*"),
                    *r.scan_iter("tb:readmark:*")]:
            r.delete(key)
    return out


def store(app, uid, title="BTCUSDT above 65000", **extra):
    with app.app_context():
        return inbox.store({"user_id": uid, "type": "PRICE_ALERT", "title": title,
                            "message": "traded at 65010.5", **extra})


def stream(client, query="", headers=None):
    response = client.get(f"/stream{query}", headers=headers, buffered=False)
    assert response.status_code == 200
    return response, EventReader(response.response)


def notifications(events):
    return [e for e in events if e.get("event") == "notification"]


def has_unread(events):
    return any(e.get("event") == "unread" for e in events)


def test_needs_a_login(client):
    response = client.get("/stream")
    assert response.status_code == 401


def test_headers_and_first_events(app, users):
    client, uid = users["a"]
    response, reader = stream(client)
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Accel-Buffering"] == "no"
    events = reader.until(has_unread)
    assert events[0].get("retry") == "2000"
    assert 'data-count="0"' in reader.named("unread")[0]["data"]
    response.close()


def test_live_notification_carries_its_replay_id_toast_and_count(app, users):
    client, uid = users["a"]
    response, reader = stream(client)
    reader.until(has_unread)
    nid, eid = store(app, uid, title="<script>alert(1)</script>")
    events = reader.until(lambda ev: len(reader.named("unread")) == 2)
    [note] = notifications(events)
    assert note["id"] == eid and f'id="n-{nid}"' in note["data"]
    assert "&lt;script&gt;" in note["data"] and "<script>" not in note["data"]
    assert "&lt;script&gt;" in reader.named("toast")[0]["data"]
    assert 'data-count="1"' in reader.named("unread")[-1]["data"]
    response.close()


@pytest.mark.parametrize("missed", [0, 1, 1000])
def test_last_event_id_replays_what_was_missed_in_order(app, users, missed):
    client, uid = users["a"]
    _, seen = store(app, uid, title="seen")
    missed_ids = [store(app, uid, title=f"missed {i}")[1] for i in range(missed)]
    response, reader = stream(client, headers={"Last-Event-ID": seen})
    events = reader.until(has_unread)
    assert [e["id"] for e in notifications(events)] == missed_ids
    assert len(reader.named("toast")) == min(missed, 3)
    assert f'data-count="{missed + 1}"' in reader.named("unread")[0]["data"]
    _, live = store(app, uid, title="live")
    events = reader.until(lambda ev: notifications(ev) and notifications(ev)[-1]["id"] == live)
    assert [e["id"] for e in notifications(events)] == [*missed_ids, live]
    response.close()


def test_the_header_wins_over_the_query_fallback(app, users):
    client, uid = users["a"]
    first = store(app, uid)[1]
    second = store(app, uid)[1]
    response, reader = stream(client, f"?last_event_id={first}", {"Last-Event-ID": second})
    assert notifications(reader.until(has_unread)) == []
    response.close()
    response, reader = stream(client, f"?last_event_id={first}")
    assert [e["id"] for e in notifications(reader.until(has_unread))] == [second]
    response.close()


def test_live_copies_of_replayed_events_are_dropped(app, users):
    client, uid = users["a"]
    first = store(app, uid)[1]
    last = store(app, uid)[1]
    response, reader = stream(client, headers={"Last-Event-ID": "0"})
    reader.until(has_unread)
    with app.app_context():  # what a publish racing the replay would deliver again
        stale = json.dumps({"id": first, "event": "notification",
                            "data": {"id": "1", "title": "again", "created_at": 0}})
        get_redis().publish(keys.user_channel(uid), stale)
    _, fresh = store(app, uid)
    events = reader.until(lambda ev: notifications(ev)[-1]["id"] == fresh)
    assert [e["id"] for e in notifications(events)] == [first, last, fresh]
    response.close()


def test_two_users_streams_are_isolated(app, users):
    (client_a, uid_a), (client_b, uid_b) = users["a"], users["b"]
    response_a, reader_a = stream(client_a)
    response_b, reader_b = stream(client_b)
    reader_a.until(has_unread)
    reader_b.until(has_unread)
    _, for_b = store(app, uid_b, title="for b only")
    _, for_a = store(app, uid_a, title="for a only")
    events_a = reader_a.until(lambda ev: notifications(ev))
    events_b = reader_b.until(lambda ev: notifications(ev))
    assert [e["id"] for e in notifications(events_a)] == [for_a]
    assert [e["id"] for e in notifications(events_b)] == [for_b]
    assert "for b" not in json.dumps(events_a)
    response_a.close()
    response_b.close()


def test_the_query_string_cannot_choose_another_channel(app, users):
    (client_a, _), (_, uid_b) = users["a"], users["b"]
    response, reader = stream(client_a, f"?user_id={uid_b}&channel=user:{uid_b}")
    reader.until(has_unread)
    store(app, uid_b)
    reader.until(lambda ev: any("comment" in e for e in ev))  # a keep-alive, nothing else
    assert notifications(reader.events) == []
    response.close()


def test_unread_changes_elsewhere_update_the_count(app, users):
    client, uid = users["a"]
    nid, _ = store(app, uid)
    response, reader = stream(client)
    reader.until(has_unread)
    with app.app_context():
        inbox.mark_read(uid, nid)
    reader.until(lambda ev: len(reader.named("unread")) == 2)
    assert 'data-count="0"' in reader.named("unread")[-1]["data"]
    response.close()


def test_ticks_of_watched_symbols_only(app, users):
    client, uid = users["a"]
    with app.app_context():
        alerts.create_alert(uid, {"symbol": "BTCUSDT", "type": "above", "price": 99000})
    response, reader = stream(client)
    reader.until(has_unread)
    with app.app_context():
        r = get_redis()
        r.publish(keys.ticks_channel("ETHUSDT"), '{"symbol":"ETHUSDT","price":3000,"ts":1}')
        r.publish(keys.ticks_channel("BTCUSDT"), '{"symbol":"BTCUSDT","price":65000.5,"ts":2}')
    reader.until(lambda ev: reader.named("tick"))
    [tick] = reader.named("tick")
    assert json.loads(tick["data"]) == {"symbol": "BTCUSDT", "price": 65000.5, "ts": 2}
    assert "id" not in tick
    response.close()


def test_an_alert_made_while_the_stream_is_open_brings_its_ticks_and_a_pause_ends_them(
        app, users):
    client, uid = users["a"]
    with app.app_context():
        alerts.create_alert(uid, {"symbol": "BTCUSDT", "type": "above", "price": 99000})
    response, reader = stream(client)
    reader.until(has_unread)
    with app.app_context():
        eth = alerts.create_alert(uid, {"symbol": "ETHUSDT", "type": "crossing", "price": 4000}).id
        # the hub subscribes the new symbol's ticks on its reader, a moment later
        r = get_redis()
        assert poll(lambda: r.pubsub_numsub(keys.ticks_channel("ETHUSDT"))[0][1])
        r.publish(keys.ticks_channel("ETHUSDT"), '{"symbol":"ETHUSDT","price":3000,"ts":1}')
    reader.until(lambda ev: reader.named("tick"))
    assert [json.loads(t["data"])["symbol"] for t in reader.named("tick")] == ["ETHUSDT"]
    with app.app_context():
        alerts.set_active(uid, eth, False)
        r = get_redis()
        r.publish(keys.ticks_channel("ETHUSDT"), '{"symbol":"ETHUSDT","price":3001,"ts":2}')
        r.publish(keys.ticks_channel("BTCUSDT"), '{"symbol":"BTCUSDT","price":65000.5,"ts":3}')
    reader.until(lambda ev: len(reader.named("tick")) == 2)
    assert [json.loads(t["data"])["ts"] for t in reader.named("tick")] == [1, 3]
    assert not reader.named("watch")  # the hub's own message never reaches the browser
    with app.app_context():
        get_redis().publish(keys.watch_channel(uid), "not json")  # dropped, the stream lives on
        tick = '{"symbol":"BTCUSDT","price":65001,"ts":4}'
        get_redis().publish(keys.ticks_channel("BTCUSDT"), tick)
    reader.until(lambda ev: len(reader.named("tick")) == 3)
    response.close()


def test_idle_streams_get_keep_alive_comments(app, users):
    client, _ = users["a"]
    response, reader = stream(client)
    events = reader.until(lambda ev: sum("comment" in e for e in ev) >= 2)
    assert [e for e in events if "comment" in e][0]["comment"] == "keepalive"
    response.close()


def test_closing_the_response_detaches_the_stream(app, users):
    client, _ = users["a"]
    response, reader = stream(client)
    reader.until(has_unread)
    hub = app.extensions["fanout"]
    assert len(hub.clients) == 1
    response.close()
    assert hub.clients == set() and hub.by_user == {}


def test_replay_shows_the_read_state_of_now(app, users):
    client, uid = users["a"]
    read, _ = store(app, uid, title="read elsewhere")
    unread, _ = store(app, uid, title="still unread")
    with app.app_context():
        inbox.mark_read(uid, read)
    response, reader = stream(client, headers={"Last-Event-ID": "0"})
    first, second = notifications(reader.until(has_unread))
    assert 'class="note read' in first["data"] and "Mark read" not in first["data"]
    assert 'class="note unread' in second["data"] and "Mark read" in second["data"]
    # the toast's title, and its Dismiss named for a reader
    assert [t["data"].count("still unread") for t in reader.named("toast")] == [2]
    assert 'data-count="1"' in reader.named("unread")[0]["data"]
    response.close()


BAD_IDS = ["0-18446744073709551616", "99999999999999999999-0", "18446744073709551616",
           "18446744073709551615-18446744073709551615", "1" * 500, "-1", "-5-0", "", "x",
           "1-2-3", "0x1f", "5-0 ", "<script>"]


@pytest.mark.parametrize("how", ["header", "query"])
def test_an_id_that_is_no_stream_id_replays_nothing(app, users, how):
    client, uid = users["a"]
    store(app, uid)
    for last in BAD_IDS:
        query, headers = ("", {"Last-Event-ID": last}) if how == "header" else (
            f"?last_event_id={quote(last)}", None)
        response, reader = stream(client, query, headers)
        assert notifications(reader.until(has_unread)) == [], last
        assert 'data-count="1"' in reader.named("unread")[0]["data"], last
        response.close()


def test_an_idle_stream_keeps_alive_within_the_period_however_the_beats_fall(app, users):
    app.config["STREAM_KEEPALIVE_S"] = 3600  # the hub's own beats never come in this test
    client, uid = users["a"]
    response, reader = stream(client)
    reader.until(has_unread)
    hub = app.extensions["fanout"]
    assert 2 * hub.beat_s <= 3600  # two beats span at most the period, so a stream that...
    hub.beat()  # ...opened just before a beat
    hub.beat()
    reader.until(lambda ev: "comment" in ev[-1])  # has sent its keep-alive by the next one
    store(app, uid)  # a write starts the count again
    reader.until(lambda ev: ev[-1].get("event") == "unread")
    hub.beat()
    hub.beat()
    events = reader.until(lambda ev: "comment" in ev[-1])
    assert [e["comment"] for e in events if "comment" in e] == ["keepalive", "keepalive"]
    response.close()


def test_a_websocket_keeps_alive_on_the_same_beats():
    state = WsState(0)
    assert state.texts([KEEPALIVE]) == []
    assert state.texts([KEEPALIVE]) == ['{"event":"keepalive"}']
    assert state.texts([KEEPALIVE, Message("unread", 2, ""), KEEPALIVE]) == [
        '{"event":"unread","data":2}']
    assert state.texts([KEEPALIVE]) == ['{"event":"keepalive"}']
