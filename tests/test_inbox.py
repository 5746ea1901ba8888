import json
import random

import pytest

from webapp import clock, keys
from webapp.exceptions import InvalidInput, NotFound
from webapp.extensions import get_redis
from webapp.inbox import service as inbox

T0 = 1_900_000_000_000  # a fixed clock, years ahead so real-time key expiry never interferes
DAY = 24 * 3600 * 1000


def note(uid=1, ntype="PRICE_ALERT", title="BTCUSDT above 65000", **extra):
    return {"user_id": uid, "type": ntype, "title": title, "message": "traded at 65010.5",
            "alert_id": "5", "data": {"symbol": "BTCUSDT", "condition": "above",
                                      "target": 65000, "price": 65010.5}, **extra}


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield get_redis()


def ids(items):
    return [n["id"] for n in items]


def test_store_writes_the_contract_layout_and_publishes(ctx):
    pubsub = ctx.pubsub()
    pubsub.subscribe(keys.user_channel(1))
    pubsub.get_message(timeout=1)
    nid, eid = inbox.store(note(), now_ms=T0)
    assert nid == f"{eid}-1"  # the entry in the user's stream is the notification
    [(entry_id, fields)] = ctx.xrange(keys.replay(1))
    stored = json.loads(fields["data"])
    assert entry_id == eid and "id" not in stored
    assert stored["user_id"] == 1 and stored["created_at"] == T0
    assert stored["data"]["target"] == 65000
    assert eid == f"{T0}-0" and inbox.unread_count(1, now_ms=T0) == 1  # the id takes its time
    assert inbox.DEFAULT_TTL_MS < ctx.pttl(keys.replay(1)) <= inbox.DEFAULT_TTL_MS + 60_000
    message = pubsub.get_message(timeout=2)
    assert json.loads(message["data"]) == {"id": eid, "event": "notification",
                                           "data": {"id": nid, **stored}}
    pubsub.close()


@pytest.mark.parametrize("bad, field", [
    ({"user_id": None}, "user_id"), ({"type": ""}, "type"), ({"priority": "loud"}, "priority"),
    ({"title": ""}, "title"), ({"title": "x" * 201}, "title"), ({"data": [1]}, "data"),
])
def test_store_refuses_bad_input(ctx, bad, field):
    with pytest.raises(InvalidInput) as exc:
        inbox.store({**note(), **bad}, now_ms=T0)
    assert field in exc.value.errors


def test_each_notification_expires_on_its_own_clock(ctx):
    old, _ = inbox.store(note(), now_ms=T0)
    new, _ = inbox.store(note(), now_ms=T0 + DAY)
    before = T0 + 7 * DAY - 1
    assert ids(inbox.list_page(1, now_ms=before)[0]) == [new, old]
    assert inbox.unread_count(1, now_ms=before) == 2
    at = T0 + 7 * DAY
    assert ids(inbox.list_page(1, now_ms=at)[0]) == [new]
    assert inbox.unread_count(1, now_ms=at) == 1
    for action in (inbox.get, inbox.mark_read, inbox.delete):
        with pytest.raises(NotFound):
            action(1, old, now_ms=at)
    assert inbox.get(1, new, now_ms=at)["id"] == new
    later = T0 + 8 * DAY
    assert inbox.list_page(1, now_ms=later) == ([], None)
    assert inbox.unread_count(1, now_ms=later) == 0
    assert inbox.mark_all_read(1, now_ms=later) == 0


TENDED = inbox.DEFAULT_TTL_MS + 60_000  # a store's keys' TTL: a minute past an entry's life


def stale_stream(ctx, uid, tended_ms_ago):
    """A user's stream holding one entry 8 days old (expired), last tended that long ago."""
    stream = keys.replay(uid)
    ctx.xadd(stream, {"event": "notification", "data": json.dumps(note(uid))},
             id=f"{clock.now_ms() - 8 * DAY}-0")
    ctx.pexpire(stream, TENDED - tended_ms_ago)
    return stream


def test_a_users_stores_tend_the_stream_once_a_minute_and_readers_count_exactly(ctx):
    """A store's trim and TTL refresh run when the stream's TTL says they have not in the last
    minute; readers trim on every read, so an expired entry a store left is never counted,
    and the keys outlive every entry a store wrote meanwhile."""
    stream = stale_stream(ctx, 1, tended_ms_ago=30_000)
    fresh, _ = inbox.store(note())
    assert ctx.xlen(stream) == 2  # left for later: the stream was tended within the minute
    assert inbox.DEFAULT_TTL_MS < ctx.pttl(stream) <= TENDED - 30_000  # the fresh one's life
    assert inbox.unread_count(1) == 1 and ids(inbox.list_page(1)[0]) == [fresh]
    stream = stale_stream(ctx, 2, tended_ms_ago=61_000)
    inbox.store_many([note(2), note(2)])
    assert ctx.xlen(stream) == 2 and inbox.unread_count(2) == 2  # trimmed by the store
    assert ctx.pttl(stream) > TENDED - 10_000  # a slow machine's seconds aside
    inbox.store(note(3))
    assert all(TENDED - 10_000 < ctx.pttl(key) <= TENDED
               for key in keys.inbox(3) if ctx.exists(key))


def walk(uid=1, limit=20, **kw):
    pages, cursor = [], None
    while True:
        items, cursor = inbox.list_page(uid, limit=limit, cursor=cursor, **kw)
        pages.append(ids(items))
        if cursor is None:
            return pages


def test_pages_are_newest_first_and_end_without_a_cursor(ctx):
    made = [inbox.store(note(), now_ms=T0 + i)[0] for i in range(45)]
    pages = walk(limit=20, now_ms=T0 + 100)
    assert [len(p) for p in pages] == [20, 20, 5]
    assert sum(pages, []) == made[::-1]


def test_a_full_last_page_has_no_cursor(ctx):
    for i in range(40):
        inbox.store(note(), now_ms=T0 + i)
    assert [len(p) for p in walk(limit=20, now_ms=T0 + 100)] == [20, 20]


def test_empty_inbox_and_limit_one(ctx):
    assert inbox.list_page(1, now_ms=T0) == ([], None)
    made = [inbox.store(note(), now_ms=T0 + i)[0] for i in range(3)]
    assert walk(limit=1, now_ms=T0 + 10) == [[made[2]], [made[1]], [made[0]]]


def test_ties_in_one_millisecond_page_without_loss_or_repeat(ctx):
    older = inbox.store(note(), now_ms=T0 - 1)[0]
    made = {inbox.store(note(), now_ms=T0)[0] for _ in range(30)}
    pages = walk(limit=7, now_ms=T0 + 10)
    flat = sum(pages, [])
    assert len(flat) == 31 and set(flat[:30]) == made and flat[30] == older


def test_new_arrivals_do_not_shift_later_pages(ctx):
    made = [inbox.store(note(), now_ms=T0 + i)[0] for i in range(10)]
    first, cursor = inbox.list_page(1, limit=4, now_ms=T0 + 100)
    for i in range(5):
        inbox.store(note(), now_ms=T0 + 50 + i)
    second, _ = inbox.list_page(1, limit=4, cursor=cursor, now_ms=T0 + 100)
    assert ids(first) + ids(second) == made[::-1][:8]


@pytest.mark.parametrize("kwargs", [{"limit": 0}, {"limit": 101}, {"cursor": "abc"},
                                    {"cursor": "12-x"}, {"cursor": "0-0"}, {"cursor": "00-000"}])
def test_bad_page_arguments_are_refused(ctx, kwargs):
    with pytest.raises(InvalidInput):
        inbox.list_page(1, **kwargs)


def test_filters_by_type_and_unread(ctx):
    price = [inbox.store(note(), now_ms=T0 + i)[0] for i in range(5)]
    order = [inbox.store(note(ntype="ORDER_EXECUTED", title="filled"), now_ms=T0 + 10 + i)[0]
             for i in range(5)]
    inbox.mark_read(1, price[1], now_ms=T0 + 20)
    inbox.mark_read(1, order[3], now_ms=T0 + 20)
    now = T0 + 20
    assert sum(walk(limit=2, ntype="PRICE_ALERT", now_ms=now), []) == price[::-1]
    unread = sum(walk(limit=3, unread=True, now_ms=now), [])
    assert unread == [o for o in order[::-1] if o != order[3]] + [
        p for p in price[::-1] if p != price[1]]
    both = inbox.list_page(1, unread=True, ntype="ORDER_EXECUTED", now_ms=now)[0]
    assert ids(both) == [order[4], order[2], order[1], order[0]]


def test_a_sparse_type_filter_returns_a_short_page_with_a_cursor(ctx, monkeypatch):
    monkeypatch.setattr(inbox, "DEFAULT_SCAN_BUDGET", 10)
    rare = inbox.store(note(ntype="RISK_VIOLATION", title="risk"), now_ms=T0)[0]
    for i in range(25):
        inbox.store(note(), now_ms=T0 + 1 + i)
    assert sum(walk(limit=5, ntype="RISK_VIOLATION", now_ms=T0 + 100), []) == [rare]


def test_mark_read_is_idempotent_and_counts(ctx):
    a, _ = inbox.store(note(), now_ms=T0)
    inbox.store(note(), now_ms=T0 + 1)
    item, count = inbox.mark_read(1, a, now_ms=T0 + 2)
    assert item["status"] == "read" and count == 1
    assert inbox.mark_read(1, a, now_ms=T0 + 2)[1] == 1
    assert inbox.unread_count(1, now_ms=T0 + 2) == 1
    assert inbox.mark_all_read(1, now_ms=T0 + 2) == 1
    assert inbox.mark_all_read(1, now_ms=T0 + 2) == 0
    assert {n["status"] for n in inbox.list_page(1, now_ms=T0 + 2)[0]} == {"read"}


def test_another_users_notification_is_not_found(ctx):
    a, _ = inbox.store(note(uid=1), now_ms=T0)
    for action in (inbox.get, inbox.mark_read, inbox.delete):
        with pytest.raises(NotFound):
            action(2, a, now_ms=T0)
    assert inbox.get(1, a, now_ms=T0)["status"] == "unread"


def test_delete_is_atomic_and_a_second_delete_is_not_found(ctx):
    a, _ = inbox.store(note(), now_ms=T0)
    inbox.delete(1, a, now_ms=T0)
    assert ctx.xlen(keys.replay(1)) == 0 and inbox.unread_count(1, now_ms=T0) == 0
    with pytest.raises(NotFound):
        inbox.delete(1, a, now_ms=T0)


@pytest.mark.parametrize("nid", ["abc", "-1", "1" * 30, "\u0661-0-1", "1-0-1\n",
                                 f"0{T0}-0-1", f"{T0}-00-1"])  # leading zeros: Redis reads T0-0
def test_malformed_ids_are_not_found(ctx, nid):
    inbox.store(note(), now_ms=T0)
    for action in (inbox.get, inbox.mark_read, inbox.delete):
        with pytest.raises(NotFound):
            action(1, nid)


def _published(pubsub, n):
    got = [json.loads(pubsub.get_message(timeout=2)["data"]) for _ in range(n)]
    assert pubsub.get_message(timeout=0.05) is None
    return got


def test_changes_publish_what_they_did_then_the_unread_count(ctx):
    """The user's other pages hear what changed (`changed`), then the count (`unread`)."""
    a, _ = inbox.store(note(), now_ms=T0)
    b, _ = inbox.store(note(), now_ms=T0 + 1)
    pubsub = ctx.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(keys.user_channel(1))
    pubsub.get_message(timeout=1)
    inbox.mark_read(1, a, now_ms=T0 + 2)
    inbox.mark_read(1, a, now_ms=T0 + 2)  # no change, no message
    inbox.delete(1, b, now_ms=T0 + 2)
    assert _published(pubsub, 4) == [
        {"event": "changed", "data": {"read": [a]}}, {"event": "unread", "data": 1},
        {"event": "changed", "data": {"deleted": [b]}}, {"event": "unread", "data": 0}]
    inbox.delete(1, a, now_ms=T0 + 2)  # a read one: the count stays
    assert _published(pubsub, 1) == [{"event": "changed", "data": {"deleted": [a]}}]

    c, _ = inbox.store(note(ntype="ORDER_EXECUTED"), now_ms=T0 + 3)
    inbox.store(note(), now_ms=T0 + 4)
    e, _ = inbox.store(note(ntype="ORDER_EXECUTED"), now_ms=T0 + 5)
    _published(pubsub, 3)  # their own notification messages
    assert inbox.mark_type_read(1, "ORDER_EXECUTED", now_ms=T0 + 6) == (2, 1)
    assert inbox.mark_all_read(1, now_ms=T0 + 6) == 1
    assert inbox.mark_all_read(1, now_ms=T0 + 6) == 0  # nothing left: no message
    assert _published(pubsub, 4) == [
        {"event": "changed", "data": {"read": [c, e]}}, {"event": "unread", "data": 1},
        {"event": "changed", "data": {"read_upto": e}}, {"event": "unread", "data": 0}]
    pubsub.close()


def test_snapshot_replays_what_came_after_in_order(ctx):
    events = [inbox.store(note(), now_ms=T0 + i)[1] for i in range(5)]

    def replay(last):
        return inbox.snapshot(1, last, now_ms=T0)[0]

    assert [e for e, _, _ in replay(events[1])] == events[2:]
    assert replay(events[-1]) == []
    assert [e for e, _, _ in replay("0")] == events
    assert replay("garbage") == [] and replay(None) == []


def test_replay_carries_the_read_state_of_now(ctx):
    a, b, c = (inbox.store(note(), now_ms=T0 + i)[0] for i in range(3))
    inbox.mark_read(1, b, now_ms=T0 + 3)
    replay, unread = inbox.snapshot(1, "0", now_ms=T0 + 3)
    assert [(n["id"], n["status"]) for _, _, n in replay] == [
        (a, "unread"), (b, "read"), (c, "unread")]
    assert unread == 2
    inbox.mark_all_read(1, now_ms=T0 + 3)
    d, _ = inbox.store(note(), now_ms=T0 + 4)
    replay, unread = inbox.snapshot(1, "0", now_ms=T0 + 4)
    assert [n["status"] for _, _, n in replay] == ["read", "read", "read", "unread"]
    assert replay[-1][2]["id"] == d and unread == 1


MAX_PART = 2**64 - 1


@pytest.mark.parametrize("last", [
    "0-18446744073709551616", "99999999999999999999-0", "18446744073709551616",
    f"{MAX_PART}-{MAX_PART}", "1" * 21, "1" * 500, "-1", "-1-0", "1--1", "1-2-3", "", " 1",
    "garbage", "\u0661-\u0660", "5-0\n", "0x10", "1e3", None])
def test_an_id_that_is_no_stream_id_or_the_last_replays_nothing(ctx, last):
    inbox.store(note(), now_ms=T0)
    assert inbox.snapshot(1, last, now_ms=T0) == ([], 1)


def test_replay_after_the_largest_sequence_goes_on_at_the_next_millisecond(ctx):
    _, eid = inbox.store(note(), now_ms=T0)
    replay, _ = inbox.snapshot(1, f"{T0 - 1}-{MAX_PART}", now_ms=T0)
    assert [e for e, _, _ in replay] == [eid]
    assert inbox.snapshot(1, f"{T0}-{MAX_PART}", now_ms=T0) == ([], 1)


def test_to_api_has_the_briefs_fields(ctx):
    nid, _ = inbox.store(note(), now_ms=T0)
    item = inbox.to_api(inbox.get(1, nid, now_ms=T0))
    assert item["id"] == nid and item["alert_id"] == 5 and item["symbol"] == "BTCUSDT"
    assert item["alert_type"] == "above" and item["trigger_price"] == 65000
    assert item["current_price"] == 65010.5 and item["status"] == "unread"
    assert item["timestamp"] == clock.ms_to_iso(T0) and item["timestamp"].endswith("Z")
    assert (item["type"], item["priority"]) == ("PRICE_ALERT", "normal")


def test_store_many_is_store_in_one_round_trip(ctx):
    made = inbox.store_many([note(uid=u) for u in (1, 2, 1)], now_ms=T0)
    pairs = zip(made, (1, 2, 1), strict=True)
    assert [nid for nid, _ in made] == [f"{eid}-{uid}" for (_, eid), uid in pairs]
    assert ids(inbox.list_page(1, now_ms=T0)[0]) == [made[2][0], made[0][0]]
    assert inbox.snapshot(2, "0", now_ms=T0)[0][0][0] == made[1][1]
    assert inbox.store_many([]) == []


def test_read_state_stays_right_through_mark_all_deletes_and_expiry(ctx):
    """The O(1) unread count against a plain model, over a random mix of every change."""
    rng, model, now = random.Random(7), {}, T0  # nid -> (created ms, unread)
    for step in range(300):
        op = rng.choice(["store", "store", "read", "all", "delete", "tick"])
        live = sorted(model)
        if op == "store":
            model[inbox.store(note(), now_ms=now)[0]] = [now, True]
        elif op == "read" and live:
            nid = rng.choice(live)
            assert inbox.mark_read(1, nid, now_ms=now)[0]["status"] == "read"
            model[nid][1] = False
        elif op == "all":
            assert inbox.mark_all_read(1, now_ms=now) == sum(u for _, u in model.values())
            model = {nid: [ms, False] for nid, (ms, _) in model.items()}
        elif op == "delete" and live:
            nid = rng.choice(live)
            inbox.delete(1, nid, now_ms=now)
            del model[nid]
        now += rng.choice([1, DAY // 2]) if op == "tick" else 1
        model = {nid: v for nid, v in model.items() if v[0] > now - inbox.DEFAULT_TTL_MS}
        expected = sorted(nid for nid, (_, unread) in model.items() if unread)
        assert inbox.unread_count(1, now_ms=now) == len(expected), step
        if step % 10 == 0:
            items, _ = inbox.list_page(1, limit=100, unread=True, now_ms=now)
            assert sorted(ids(items)) == expected, step
            replay, _ = inbox.snapshot(1, "0", now_ms=now)
            assert sorted(n["id"] for _, _, n in replay if n["status"] == "unread") == expected
