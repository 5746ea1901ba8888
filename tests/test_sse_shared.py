"""SSE partials shared between notifications alike but for their id (one event to every user):
each frame is byte for byte the partial rendered for that notification alone."""

import time

import pytest

from webapp import clock, keys
from webapp.inbox import service as inbox
from webapp.live.fanout import Message
from webapp.live.feed import message_item
from webapp.live.sse import ID_TOKEN, PENDING, Renderer, SseState, frame

INBOX_URL = "/notifications/"
UIDS = (101, 102, 103)


@pytest.fixture
def render(app):
    with app.app_context():
        yield Renderer(app, INBOX_URL)


def published(app, r, notifications):
    """Store the notifications; the messages published to their users, as the hub parses them."""
    uids = {n["user_id"] for n in notifications}
    pubsub = r.pubsub()
    pubsub.subscribe(*(keys.user_channel(uid) for uid in uids))
    for _ in uids:  # every subscription confirmed before anything is published
        assert (pubsub.get_message(timeout=5) or {}).get("type") == "subscribe"
    with app.app_context():
        inbox.store_many(notifications, now_ms=clock.now_ms())  # one time: one shape
    out, deadline = [], time.monotonic() + 10
    while len(out) < len(notifications):
        assert time.monotonic() < deadline, f"only {len(out)} messages arrived"
        message = pubsub.get_message(timeout=1)
        if message is not None and message["type"] == "message":
            out.append(Message.parse(message["data"]))
    pubsub.close()
    assert [m.event for m in out] == ["notification"] * len(notifications)
    return out


def alone(app, m, insists=False):
    """The notification's item and toast frames as the templates render it on its own."""
    env, item = app.jinja_env, message_item(m)
    html = env.get_template("inbox/_item.html").render(
        n=item, inbox_url=INBOX_URL, insist={item["id"]: PENDING} if insists else None)
    toast = env.get_template("inbox/_toast.html").render(n=item, inbox_url=INBOX_URL,
                                                         insists=insists)
    return frame("notification", html, m.id) + frame("toast", toast)


def live_frames(render, m, insisting=frozenset()):
    """What one stream of the user sends for the message, without its unread count."""
    data = SseState(render, 0, insisting).frames((m,))
    return data[:data.index(b"event: unread")]


def note(uid, title="BTCUSDT above 65000", **extra):
    return {"user_id": uid, "type": "PRICE_ALERT", "title": title, "message": "traded at 65010.5",
            **extra}


def test_one_event_to_many_users_gives_each_its_own_id_in_the_shared_rendering(app, r, render):
    messages = published(app, r, [note(uid) for uid in UIDS])
    assert len({message_item(m)["id"] for m in messages}) == len(UIDS)
    with app.app_context():
        for m in messages:
            data = live_frames(render, m)
            assert data == alone(app, m)
            others = {message_item(o)["id"] for o in messages} - {message_item(m)["id"]}
            assert not any(other.encode() in data for other in others)
            assert ID_TOKEN.encode() not in data


def test_notifications_that_differ_share_no_bytes_and_stay_escaped(app, r, render):
    first, second = published(app, r, [
        note(UIDS[0], "<script>alert(1)</script>"), note(UIDS[1], "ETHUSDT below 3000")])
    with app.app_context():
        one, two = live_frames(render, first), live_frames(render, second)
        assert one == alone(app, first) and two == alone(app, second)
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in one and b"<script>" not in one
    assert b"ETHUSDT" not in one and b"script" not in two and b"ETHUSDT below 3000" in two


def test_text_holding_the_token_is_sent_as_written(app, r, render):
    # the item's type is lowercased by the template: upper case must not slip past the check
    shouting = ID_TOKEN.upper()
    messages = published(app, r, [note(uid, shouting, type=shouting) for uid in UIDS[:2]])
    with app.app_context():
        for m in messages:
            data = live_frames(render, m)
            assert data == alone(app, m)
            assert data.count(ID_TOKEN.encode()) == 1  # the type's text, and nothing else
            # the title, in the item and the toast, and naming the item's two buttons and the
            # toast's Dismiss for a reader
            assert data.count(shouting.encode()) == 5


def test_the_acknowledge_button_follows_each_users_own_types(app, r, render):
    insisting, plain = published(app, r, [note(UIDS[0]), note(UIDS[1])])
    with app.app_context():
        urgent = live_frames(render, insisting, frozenset({"PRICE_ALERT"}))
        calm = live_frames(render, plain)
        assert urgent == alone(app, insisting, insists=True)
        assert calm == alone(app, plain)
    assert urgent.count(b"Acknowledge") == 2 and b"Acknowledge" not in calm


def test_a_replayed_notification_sends_the_same_item_as_its_live_copy(app, r, render):
    messages = published(app, r, [note(uid) for uid in UIDS])
    with app.app_context():
        for uid, m in zip(UIDS, messages, strict=True):
            replay, unread = inbox.snapshot(uid, "0")
            opening = SseState(render, unread).opening(replay)
            assert live_frames(render, m) in opening


def test_notifications_alike_but_for_their_user_share_one_rendering(app, r, render):
    messages = published(app, r, [note(uid) for uid in UIDS])
    with app.app_context():
        for m in messages:
            live_frames(render, m)
    assert len(render._shared) == 2  # the item and the toast, for all three users


@pytest.mark.parametrize("field, one, other", [
    ("priority", "normal", "high"),
    ("message", "traded at 65010.5", "traded at 65010.6"),
    ("data", {"symbol": "BTCUSDT"}, {"symbol": "ETHUSDT"}),
])
def test_notifications_differing_in_any_other_field_are_rendered_apart(app, r, render, field,
                                                                        one, other):
    first, second = published(app, r, [note(UIDS[0], **{field: one}),
                                       note(UIDS[1], **{field: other})])
    with app.app_context():
        assert live_frames(render, first) == alone(app, first)
        assert live_frames(render, second) == alone(app, second)
    assert len(render._shared) == 4
