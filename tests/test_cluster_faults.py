"""Faults between the matcher's two steps on a Redis Cluster, and a slot changing master
under an open stream: nothing fired is lost, nothing written twice, no stream left deaf.

A Redis call of the users' step is made to fail for real (a key of the wrong type where
DELIVER writes), as a lost connection or a failover between the two steps would.
"""

import json
import signal
import threading
import time

import pytest
import redis as redis_py
from redis.exceptions import ResponseError

from devtools import redisd
from tests.cluster import connect, data_plane, nodes_config
from tests.hub import poll
from webapp import keys
from webapp.accounts import service as accounts
from webapp.alerts import index as alert_index
from webapp.alerts import service as alerts
from webapp.core import health
from webapp.extensions import get_redis
from webapp.live import fanout
from webapp.models import Alert
from worker.listener.hosting import rebuild_alert_index
from worker.matcher import Matcher
from worker.outbox import SWEEP_AGE_MS, Outbox


@pytest.fixture
def ctx(make_app, rc, redis_cluster):
    app = make_app(REDIS_CLUSTER_NODES=nodes_config(redis_cluster))
    with app.app_context():
        yield app


def break_users_step(r, uid):
    """DELIVER's lookup in tb:applied:{uid} now fails with WRONGTYPE."""
    r.set(keys.applied(uid), "x")


def mend_users_step(r, uid):
    r.delete(keys.applied(uid))


def later():
    return int(time.time() * 1000) + SWEEP_AGE_MS + 60_000


def inbox_titles(r, uid):
    return [json.loads(f["data"])["title"] for _, f in r.xrange(keys.replay(uid))]


def test_a_batch_left_between_the_steps_survives_the_listener_restart_rebuild(ctx):
    """The listener dies (here: its users' step fails) after the symbol's step fired the
    symbol's last alert. The restarted listener rebuilds the index at its start, where the
    symbol has 0 alerts: it stays in tb:symbols while its outbox holds the batch, so the
    sweep still finds and completes it."""
    r = get_redis()
    uid = accounts.create_user("trader@example.com", "correct horse").id
    alerts.create_alert(uid, {"symbol": "BTCUSDT", "type": "above", "price": 100})
    break_users_step(r, uid)
    with pytest.raises(ResponseError):
        Matcher(r).on_price("BTCUSDT", 101, int(time.time() * 1000))
    assert r.xlen(keys.outbox("BTCUSDT")) == 1  # the batch waits for the sweep
    mend_users_step(r, uid)
    rebuild_alert_index(r)  # what a restarted listener does first
    Outbox(r).sweep(alert_index.registered(r), now_ms=later())
    assert inbox_titles(r, uid) == ["BTCUSDT above 100"]
    assert r.xlen(keys.outbox("BTCUSDT")) == 0


def test_a_batch_left_between_the_steps_survives_the_user_deleting_the_alert(ctx):
    """Same window; the user deletes the (still active-looking) alert meanwhile: unindex
    finds 0 alerts left, and the symbol stays registered for its batch all the same."""
    r = get_redis()
    uid = accounts.create_user("trader@example.com", "correct horse").id
    alert = alerts.create_alert(uid, {"symbol": "ETHUSDT", "type": "above", "price": 100})
    break_users_step(r, uid)
    with pytest.raises(ResponseError):
        Matcher(r).on_price("ETHUSDT", 101, int(time.time() * 1000))
    mend_users_step(r, uid)
    alerts.delete_alert(uid, alert.id)
    Outbox(r).sweep(alert_index.registered(r), now_ms=later())
    assert inbox_titles(r, uid) == ["ETHUSDT above 100"]  # it fired before the delete


def test_the_sweep_keeps_the_symbol_followed_while_younger_batches_wait(rc):
    """The sweep takes only batches older than its age; after completing them it keeps the
    symbol registered while a younger batch still waits in the outbox."""
    for uid, target in ((1, 100), (2, 110)):
        alert_index.index(Alert(id=uid, user_id=uid, symbol="SOLUSDT", condition="above",
                                target=target, mode="once", buffer=0.5, buffer_is_pct=False,
                                note="", active=True), rc)
        break_users_step(rc, uid)
    matcher, now = Matcher(rc), int(time.time() * 1000)
    with pytest.raises(ResponseError):
        matcher.on_price("SOLUSDT", 101, now)
    [(first, _)] = rc.xrange(keys.outbox("SOLUSDT"))
    first_ms = int(first.split("-")[0])
    while server_ms(rc) <= first_ms:
        pass  # the next batch must get a later millisecond (a few at most)
    with pytest.raises(ResponseError):
        matcher.on_price("SOLUSDT", 111, now + 1)
    for uid in (1, 2):
        mend_users_step(rc, uid)
    outbox = Outbox(rc)
    outbox.sweep(alert_index.registered(rc), now_ms=first_ms, age_ms=0)  # the first batch only
    assert inbox_titles(rc, 1) == ["SOLUSDT above 100"]
    outbox.sweep(alert_index.registered(rc), now_ms=later())
    assert inbox_titles(rc, 2) == ["SOLUSDT above 110"]


def server_ms(r):
    seconds, micros = r.time()
    return seconds * 1000 + micros // 1000


def crossing(alert_id, uid, symbol, level=100.0):
    return Alert(id=alert_id, user_id=uid, symbol=symbol, condition="crossing_up",
                 target=level, mode="once", buffer=0.5, buffer_is_pct=False, note="",
                 active=True)


def test_a_failed_users_step_does_not_lose_the_rest_of_a_split_tick(rc):
    """A storm split into batches (here batch=1): the first batch's users' step fails and
    on_price raises before the continuation runs. The tick is retried before the next one
    (trade ids order them), so the second crossing fires too; the sweep finishes the first."""
    for uid in (1, 2):
        alert_index.index(crossing(uid, uid, "XRPUSDT"), rc)
    matcher, t = Matcher(rc, batch=1), int(time.time() * 1000)
    assert matcher.on_price("XRPUSDT", 99, t, seq=1) == []  # the crossings find their side
    break_users_step(rc, 1)
    with pytest.raises(ResponseError):
        matcher.on_price("XRPUSDT", 101, t + 1, seq=2)
    mend_users_step(rc, 1)
    matcher.on_price("XRPUSDT", 102, t + 2, seq=3)
    Outbox(rc).sweep(alert_index.registered(rc) or ["XRPUSDT"], now_ms=later())
    fired = {uid: inbox_titles(rc, uid) for uid in (1, 2)}
    assert fired == {1: ["XRPUSDT crossed up through 100"],
                     2: ["XRPUSDT crossed up through 100"]}


def replica_of_owner(cluster, key):
    """The port of a replica of the master that owns `key`'s slot."""
    r = connect(cluster)
    try:
        master = r.get_node_from_key(key)
    finally:
        r.close()
    return next(port for port, role in cluster.roles().items()
                if role[0] == "slave" and int(role[2]) == int(master.port))


def test_a_stream_served_through_a_manual_failover_keeps_hearing_its_user(doomed_cluster):
    """CLUSTER FAILOVER moves the user's slot to the replica; Redis 7 then sends the old
    master's SSUBSCRIBErs an `sunsubscribe` for the channel. The link takes that as a drop:
    the stream ends (the browser reconnects and replays), never left open and deaf."""
    config = {"REDIS_CLUSTER_NODES": nodes_config(doomed_cluster)}
    hub = fanout.Hub(config, name="tb-hub-failover")
    try:
        client = hub.attach(fanout.Client(7))
        port = replica_of_owner(doomed_cluster, keys.user_channel(7))
        direct = redis_py.Redis(host="127.0.0.1", port=int(port), decode_responses=True)
        direct.execute_command("CLUSTER", "FAILOVER")
        assert poll(lambda: direct.execute_command("ROLE")[0] == "master", timeout=15)
        doomed_cluster.wait_healthy()
        r = data_plane(doomed_cluster)
        message = '{"id":"1-0","event":"notification","data":{}}'

        def heard_or_ended():
            if client.closed:
                return "ended"
            r.spublish(keys.user_channel(7), message)
            with fanout._QUEUE_LOCK:
                got = [m for m in client.pending if m.event == "notification"]
            return "heard" if got else None

        assert poll(heard_or_ended, timeout=10) in ("heard", "ended")
        direct.close()
        r.close()
    finally:
        hub.stop()


def test_a_stream_whose_master_froze_ends_rather_than_stays_deaf(doomed_cluster):
    """The master of the user's slot frozen (SIGSTOP) and its replica taking over: the link's
    connection to it hears nothing more, not even an `sunsubscribe`, until it thaws. Silent
    past the probe's wait, the link ends, and the stream with it (the browser reconnects and
    replays), while the master is still frozen: not left deaf, then fed what the old master
    wrote meanwhile (a drill: 400 notifications missed live)."""
    config = {"REDIS_CLUSTER_NODES": nodes_config(doomed_cluster)}
    hub = fanout.Hub(config, name="tb-hub-frozen")
    client = hub.attach(fanout.Client(7))
    r = connect(doomed_cluster)
    victim = int(r.get_node_from_key(keys.user_channel(7)).port)
    r.close()
    with redis_py.Redis(host="127.0.0.1", port=victim, decode_responses=True) as owner:
        assert poll(lambda: owner.execute_command(  # the hub's subscription is in place
            "PUBSUB", "SHARDNUMSUB", keys.user_channel(7))[1] == 1, timeout=10)
    process = doomed_cluster.processes[victim]
    process.send_signal(signal.SIGSTOP)
    try:
        assert poll(lambda: client.closed, timeout=15), "the stream stayed open and deaf"
    finally:
        process.send_signal(signal.SIGCONT)
        hub.stop()


def test_a_stream_on_a_master_lost_before_any_of_its_channels_opens_and_ends_no_other(
        doomed_cluster):
    """A master killed while the link had no channel there: the link never noticed, and its
    slot map still named the dead node. A drill: minutes after the failover, the first stream
    of a user in its slots got a 503, and every open stream of that web process ended."""
    config = {"REDIS_CLUSTER_NODES": nodes_config(doomed_cluster)}
    r = connect(doomed_cluster)
    owner = {uid: int(r.get_node_from_key(keys.user_channel(uid)).port) for uid in range(1, 60)}
    r.close()
    here = 1
    there = next(uid for uid, port in owner.items() if port != owner[here])
    hub = fanout.Hub(config, name="tb-hub-stale-map")
    try:
        open_stream = hub.attach(fanout.Client(here))
        doomed_cluster.kill(owner[there])
        live = next(port for port in doomed_cluster.processes if port != owner[there])

        def served_again():
            with redis_py.Redis(host="127.0.0.1", port=live, decode_responses=True) as node:
                if node.execute_command("CLUSTER", "INFO").find("cluster_state:ok") < 0:
                    return False
            probe = connect(doomed_cluster)
            try:
                return probe.set(f"probe:{{{there}}}", 1)  # the user's slot
            except redis_py.RedisError:
                return False
            finally:
                probe.close()

        assert poll(served_again, timeout=30), "the replica never took over"
        new_stream = hub.attach(fanout.Client(there))  # raised ConnectionError (a 503)
        assert not open_stream.closed, "the open stream of another user was ended"
        plane = data_plane(doomed_cluster)
        message = '{"id":"1-0","event":"notification","data":{}}'

        def heard():
            plane.spublish(keys.user_channel(there), message)
            with fanout._QUEUE_LOCK:
                return any(m.event == "notification" for m in new_stream.pending)

        assert poll(heard, timeout=10)
        plane.close()
    finally:
        hub.stop()


def test_a_batch_whose_commit_failed_is_not_written_twice_after_64_more_batches(rc):
    """DELIVER ran, COMMIT failed (its slot's master away, say): the batch waits >= 5 s for
    the sweep. A user who meanwhile got 64 more batches still has it in tb:applied (kept a
    day, not by count), so the sweep writes nothing twice."""
    for target in range(1, 66):
        alert_index.index(Alert(id=target, user_id=1, symbol="ADAUSDT", condition="above",
                                target=target, mode="once", buffer=0.5, buffer_is_pct=False,
                                note="", active=True), rc)
    matcher, t = Matcher(rc), int(time.time() * 1000)
    rc.set(keys.FIRED_BATCHES, "x")  # COMMIT's ZADD fails with WRONGTYPE
    with pytest.raises(ResponseError):
        matcher.on_price("ADAUSDT", 1, t)
    rc.delete(keys.FIRED_BATCHES)
    for price in range(2, 66):
        assert len(matcher.on_price("ADAUSDT", price, t + price)) == 1
    Outbox(rc).sweep(["ADAUSDT"], now_ms=later())
    assert rc.xlen(keys.replay(1)) == 65


def test_health_names_the_clusters_state_while_a_lost_masters_slots_fail(make_app,
                                                                          doomed_cluster):
    """Between a master's death and its replica taking over, reads in its slots fail: the
    report says Redis is down and still shows the cluster as a node answering sees it."""
    app = make_app(REDIS_CLUSTER_NODES=nodes_config(doomed_cluster))
    with app.app_context():
        assert health.report(get_redis)[0]["cluster"]["state"] == "ok"
        # the master of a key every report reads, its replica kept from taking over: the
        # slots stay lost until the test has looked (masters()[0] holds none of them)
        victim = get_redis().get_node_from_key(keys.PROCESSES)
        replica = replica_of_owner(doomed_cluster, keys.PROCESSES)
        with redis_py.Redis(host="127.0.0.1", port=int(replica)) as standby:
            standby.config_set("cluster-replica-no-failover", "yes")
        doomed_cluster.kill(int(victim.port))
        down = poll(lambda: (body := health.report(get_redis)[0])["redis"] == "down"
                    and body["cluster"]["state"] != "ok" and body, timeout=15)
        assert down, "the report never saw the lost slots"
        assert down["status"] == "degraded" and down["cluster"]["state"] != "ok"


def assert_probe_answers_down(client):
    """A load balancer's probe (4 s) gets /api/v1/health's 503, Redis down, not a timeout."""
    answers = []
    probe = threading.Thread(target=lambda: answers.append(client.get("/api/v1/health")))
    probe.start()
    probe.join(4)
    assert answers, "the health check hung past a probe's 4 s"
    assert answers[0].status_code == 503 and answers[0].get_json()["redis"] == "down"


def test_health_answers_within_a_probe_s_wait_while_a_master_is_frozen(make_app,
                                                                        doomed_cluster):
    """A master frozen (SIGSTOP), its replica kept from taking over: every read in its slots
    hangs, the data plane's for 5 s each. /api/v1/health has a client of its own, which gives
    up after a second, so a load balancer's probe (4 s, say) gets its 503, not a timeout."""
    app = make_app(REDIS_CLUSTER_NODES=nodes_config(doomed_cluster))
    client = app.test_client()
    with app.app_context():
        victim = get_redis().get_node_from_key(keys.PROCESSES)  # a key every report reads
    replica = replica_of_owner(doomed_cluster, keys.PROCESSES)
    with redis_py.Redis(host="127.0.0.1", port=int(replica)) as standby:
        standby.config_set("cluster-replica-no-failover", "yes")
    client.get("/api/v1/health")  # its clients made, the slot map read
    process = doomed_cluster.processes[int(victim.port)]
    process.send_signal(signal.SIGSTOP)
    try:
        for _ in range(2):  # twice: the second no slower for the first
            assert_probe_answers_down(client)
    finally:
        process.send_signal(signal.SIGCONT)


def test_health_answers_within_a_probe_s_wait_while_rqs_redis_is_frozen(make_app, rc,
                                                                         redis_cluster,
                                                                         tmp_path):
    """Beside a cluster, RQ's queues live on REDIS_URL, which the report reads for their
    lengths. Frozen, it fails the probe in about a second, as a frozen master does."""
    process, url = redisd.start(tmp_path / "rq-redis", appendonly=False)
    try:
        app = make_app(REDIS_CLUSTER_NODES=nodes_config(redis_cluster), REDIS_URL=url)
        client = app.test_client()
        assert client.get("/api/v1/health").get_json()["queues"] is not None
        process.send_signal(signal.SIGSTOP)
        try:
            for _ in range(2):  # twice: the second no slower for the first
                assert_probe_answers_down(client)
        finally:
            process.send_signal(signal.SIGCONT)
        assert poll(lambda: client.get("/api/v1/health").get_json()["queues"] is not None,
                    timeout=10), "the report never read the queues again"
    finally:
        redisd.stop(process)
