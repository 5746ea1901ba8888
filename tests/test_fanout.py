"""The hub's per-user subscriptions on a real Redis: what is subscribed, when, and for how long."""

import json
import os
import resource
import time

import pytest
import redis

from devtools import redisd
from tests.hub import poll
from webapp import keys
from webapp.core.outage import Outage
from webapp.inbox import service as inbox
from webapp.live import fanout, views
from webapp.live.channels import Subscriptions
from webapp.live.feed import Feed
from webapp.live.link import SUBSCRIBE_BATCH, Link


@pytest.fixture
def hub(redis_url):
    hub = fanout.Hub({"REDIS_URL": redis_url}, name="tb-hub-test")
    yield hub
    hub.stop()


def channels(r):
    """The channels a hub subscribes to (an app's token cache, left by an earlier test in
    this Redis, listens on tb:service-tokens:revoked: not the hub's)."""
    return set(r.pubsub_channels("tb:*")) - {keys.SERVICE_TOKENS_REVOKED}


def subscribers(r, channel):
    return dict(r.pubsub_numsub(channel))[channel]


def test_a_user_with_no_page_open_costs_a_publish_nothing(hub, r):
    hub.attach(fanout.Client(1, ["BTCUSDT"]))
    assert r.publish(keys.user_channel(2), '{"event":"unread","data":1}') == 0
    assert subscribers(r, keys.user_channel(2)) == 0
    assert r.pubsub_numpat() == 0  # no pattern makes every publish match and copy
    assert subscribers(r, keys.user_channel(1)) == 1
    assert channels(r) == {keys.user_channel(1), keys.watch_channel(1),
                           keys.ticks_channel("BTCUSDT")}


def test_a_message_published_as_soon_as_attach_returns_arrives_once(hub, r):
    client = hub.attach(fanout.Client(7))
    assert r.publish(keys.user_channel(7), '{"id":"1-0","event":"notification","data":{}}') == 1
    batch = client.next_batch()
    assert [(m.event, m.id) for m in batch] == [("notification", "1-0")]


def test_a_notification_stored_between_attach_and_replay_is_sent_once(make_app):
    """The seam: `_open` asks whether the credential is still valid after attaching and before
    reading the replay; a notification stored right there is both replayed and published."""
    app = make_app()
    with app.app_context():
        _, seen = inbox.store({"user_id": 5, "type": "PRICE_ALERT", "title": "seen"})
    stored = []

    def store_then_valid():
        stored.append(inbox.store({"user_id": 5, "type": "PRICE_ALERT", "title": "between"})[1])
        return True

    try:
        with app.test_request_context():
            hub, client, replay, unread = views._open(
                5, seen, lambda hub, symbols: fanout.Client(5, symbols), store_then_valid)
            feed = Feed(unread)
            events = feed.opening(replay) + feed.live(client.next_batch())
            hub.detach(client)
    finally:
        app.extensions["fanout"].stop()
    sent = [eid for name, eid, _ in events if name == "notification"]
    assert sent == stored


def test_the_last_stream_of_a_user_leaving_unsubscribes_and_the_other_still_receives(hub, r):
    first, second = hub.attach(fanout.Client(3)), hub.attach(fanout.Client(3))
    assert subscribers(r, keys.user_channel(3)) == 1  # one subscription for both streams
    hub.detach(first)
    assert r.publish(keys.user_channel(3), '{"event":"unread","data":4}') == 1
    assert [m.data for m in second.next_batch()] == [4]
    hub.detach(second)
    assert poll(lambda: keys.user_channel(3) not in channels(r), timeout=5)
    assert poll(lambda: channels(r) == set(), timeout=5)


def test_a_channel_unsubscribed_and_wanted_again_turns_live_only_after_the_resubscribe(hub, r):
    for _ in range(20):  # detach and attach at once: the new stream must still hear it
        hub.detach(hub.attach(fanout.Client(4)))
        client = hub.attach(fanout.Client(4))
        assert r.publish(keys.user_channel(4), '{"event":"unread","data":1}') == 1
        assert [m.data for m in client.next_batch()] == [1]
        hub.detach(client)


def test_a_new_alert_brings_its_ticks_channel_and_dropping_it_lets_it_go(hub, r):
    client = hub.attach(fanout.Client(8, ["BTCUSDT"]))
    r.publish(keys.watch_channel(8), '["ETHUSDT"]')
    assert poll(lambda: keys.ticks_channel("ETHUSDT") in channels(r), timeout=5)
    assert poll(lambda: keys.ticks_channel("BTCUSDT") not in channels(r), timeout=5)
    assert r.publish(keys.ticks_channel("ETHUSDT"), '{"s":"ETHUSDT"}') == 1
    assert [m.event for m in client.next_batch()] == ["tick"]


def test_pending_subscribes_go_out_as_few_commands(redis_url, r):
    users = 2500
    subscriptions = Subscriptions()
    for uid in range(users):
        subscriptions.want([keys.user_channel(uid), keys.watch_channel(uid)])
    before = r.info("commandstats").get("cmdstat_subscribe", {}).get("calls", 0)
    link = Link({"REDIS_URL": redis_url}, "tb-hub-batch", subscriptions)
    try:
        link.send()
        while len(subscriptions.live) < 2 * users:
            link.read(lambda channel, data: None)
            link.wait(1)
        calls = r.info("commandstats")["cmdstat_subscribe"]["calls"] - before
        assert calls == -(-2 * users // SUBSCRIBE_BATCH)  # 5 commands, not 5000
    finally:
        link.close()
        subscriptions.close()


def test_after_a_redis_restart_the_hub_subscribes_what_its_streams_still_need(tmp_path):
    process, url = redisd.start(tmp_path / "redis", appendonly=False)
    hub = fanout.Hub({"REDIS_URL": url}, name="tb-hub-restart")
    try:
        staying = hub.attach(fanout.Client(11))
        redisd.stop(process)
        assert staying.next_batch() == [] and staying.closed  # ended: the browser reconnects
        process, _ = redisd.start(tmp_path / "redis", appendonly=False)  # the same socket
        with redis.Redis.from_url(url, decode_responses=True) as fresh:
            # the ended stream is still counted until its request lets go of it
            assert poll(lambda: keys.user_channel(11) in channels(fresh), timeout=20)
            hub.detach(staying)
            assert poll(lambda: channels(fresh) == set(), timeout=5)
            again = hub.attach(fanout.Client(11), timeout=10)
            assert fresh.publish(keys.user_channel(11), '{"event":"unread","data":2}') == 1
            assert [m.data for m in again.next_batch()] == [2]
    finally:
        hub.stop()
        redisd.stop(process)


def test_a_stream_starting_while_redis_is_back_does_not_wait_out_the_backoff(tmp_path,
                                                                             monkeypatch):
    """The link's backoff grows while Redis is away (a failover, a restart); a browser
    reconnecting once it is back wakes the reader instead of being refused until then."""
    monkeypatch.setattr(fanout, "Outage", lambda who: Outage(who, base=60, cap=60))
    process, url = redisd.start(tmp_path / "redis", appendonly=False)
    hub = fanout.Hub({"REDIS_URL": url}, name="tb-hub-backoff")
    try:
        hub.attach(fanout.Client(12))
        redisd.stop(process)  # the link fails: its next try is 30-60 s away
        assert poll(lambda: hub._link is None, timeout=5)
        process, _ = redisd.start(tmp_path / "redis", appendonly=False)
        started = time.monotonic()
        client = hub.attach(fanout.Client(12), timeout=5)
        assert time.monotonic() - started < 5 and not client.closed
    finally:
        hub.stop()
        redisd.stop(process)


def shard_subscribers(rc, channel):
    return dict(rc.pubsub_shardnumsub(channel, target_nodes=rc.get_node_from_key(channel)))[
        channel]


def test_on_a_cluster_the_hub_shard_subscribes_and_a_dropped_link_is_resubscribed(
        redis_cluster, rc):
    hub = fanout.Hub({"REDIS_URL": "redis://127.0.0.1:1/0",  # the data plane is the cluster
                      "REDIS_CLUSTER_NODES": [(h, int(p)) for h, p in
                                              (n.split(":") for n in redis_cluster.nodes)]},
                     name="tb-hub-cluster")
    channel = keys.user_channel(21)
    try:
        first = hub.attach(fanout.Client(21))
        assert shard_subscribers(rc, channel) == 1
        assert rc.spublish(channel, '{"event":"unread","data":3}') == 1
        assert rc.spublish(keys.user_channel(22), '{"event":"unread","data":3}') == 0
        assert [m.data for m in first.next_batch()] == [3]
        node = rc.get_node_from_key(channel)
        rc.execute_command("CLIENT KILL", "TYPE", "pubsub", target_nodes=node)
        assert first.next_batch() == [] and first.closed  # the stream ends; it replays
        assert poll(lambda: shard_subscribers(rc, channel) == 1, timeout=15)  # still counted
        hub.detach(first)
        assert poll(lambda: shard_subscribers(rc, channel) == 0, timeout=5)
        second = hub.attach(fanout.Client(21), timeout=10)
        assert rc.spublish(channel, '{"event":"unread","data":4}') == 1
        assert [m.data for m in second.next_batch()] == [4]
    finally:
        hub.stop()


def test_a_notification_published_without_its_id_gets_the_id_its_replay_has():
    # the matcher publishes the stored entry as it is (worker/match/); the hub adds the id
    published = fanout.Message.parse(
        '{"id":"1700000000000-3","event":"notification","data":{"user_id":42,"title":"t"}}')
    assert published.id == "1700000000000-3"
    assert published.data == {"id": "1700000000000-3-42", "user_id": 42, "title": "t"}
    with_id = fanout.Message.parse(
        '{"id":"5-0","event":"notification","data":{"id":"5-0-7","user_id":7}}')
    assert with_id.data == {"id": "5-0-7", "user_id": 7}
    assert fanout.Message.parse('{"id":"1-0","event":"notification","data":{}}').data == {}


@pytest.mark.parametrize("raw", [
    '{"id":"1-0","event":"notification","data":{"user_id":7,"data":{"n":12345678901234567890}}}',
    '{"id":"1-0","event":"notification","data":{"user_id":7,"data":{"n":-9223372036854775809}}}',
    '{"id":"1-0","event":"notification","data":{"user_id":7,"title":"caf\u00e9 \ud83d\ude80"}}',
    '{"id":"1-0","event":"notification","data":{"user_id":7,"title":"lone \ud800"}}',
    '{"id":"1-0","event":"notification","data":{"user_id":7,"data":{"x":NaN}}}',
    '{"id":"1-0","event":"notification","data":{"user_id":7,"data":{"x":1e400}}}',
    '{"event":"unread","data":3}',
])
def test_the_hub_reads_a_message_as_the_standard_library_does(raw):
    """orjson first (a quarter of a burst's reading), the standard library for what orjson
    refuses or may misread: a big integer stays exact, a lone surrogate is still read."""
    message = fanout.Message.parse(raw)
    expected = json.loads(raw)
    if isinstance(expected["data"], dict):
        expected["data"]["id"] = "1-0-7"
    assert (message.event, message.data) == (expected["event"], expected["data"])
    assert repr(message.data) == repr(expected["data"])  # an int stays an int, a float a float


@pytest.mark.parametrize("raw", ["[1]", "3", '"text"', "{", '{"data":{}}', "", "null"])
def test_a_message_that_is_no_event_is_dropped_not_the_link(raw):
    assert fanout.Message.parse(raw) is None


def test_a_burst_read_in_large_pieces_reaches_every_stream_in_order(hub, r):
    """Thousands of messages land in one read of the socket; the hub hands on what hiredis
    already holds before asking the socket again, and none is left waiting there."""
    clients = [hub.attach(fanout.Client(uid)) for uid in range(1, 51)]
    with r.pipeline(transaction=False) as pipe:
        for n in range(100):
            for uid in range(1, 51):
                pipe.publish(keys.user_channel(uid),
                             f'{{"id":"{n + 1}-0","event":"notification","data":{{}}}}')
        pipe.execute()
    for client in clients:
        got = []
        while len(got) < 100:
            got += [m.id for m in client.next_batch()]
        assert got == [f"{n + 1}-0" for n in range(100)]


def test_health_checks_amid_messages_go_out_and_their_replies_stay_off_the_streams(
        redis_url, r):
    """redis-py's health check (a PING on the link when due, sent as a message is read)
    still goes out, and the link reads its replies amid the messages, each message once and
    in order, on the same link."""
    hub = fanout.Hub({"REDIS_URL": redis_url}, name="tb-hub-test")
    try:
        client = hub.attach(fanout.Client(5))
        link = hub._link
        link.pubsub.connection.health_check_interval = 0.01
        before = r.info("commandstats").get("cmdstat_ping", {}).get("calls", 0)
        got = []
        for n in range(30):
            r.publish(keys.user_channel(5), f'{{"id":"{n + 1}-0","event":"notification",'
                                            f'"data":{{}}}}')
            time.sleep(0.02)
            got += client.next_batch() if client.pending else []
        while len(got) < 30:
            got += client.next_batch()
        assert [m.id for m in got] == [f"{n + 1}-0" for n in range(30)]
        assert r.info("commandstats")["cmdstat_ping"]["calls"] > before
        assert hub._link is link  # the same link: no reply broke it
    finally:
        hub.stop()


def test_a_link_on_a_descriptor_past_1023_reads_and_waits(redis_url, r):
    """A web process with thousands of streams open makes its link again (after an outage)
    on a high descriptor, which select() refuses; the link uses poll."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip(f"the descriptor limit ({hard}) is too low to test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1300), hard))
    taken = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    hub = fanout.Hub({"REDIS_URL": redis_url}, name="tb-hub-test")
    try:
        client = hub.attach(fanout.Client(9))
        assert hub._link.pubsub.connection._sock.fileno() > 1023
        r.publish(keys.user_channel(9), '{"id":"1-0","event":"notification","data":{}}')
        assert [m.id for m in client.next_batch()] == ["1-0"]
    finally:
        hub.stop()
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
