"""The hub's pub/sub link: one connection to Redis, or one a node on a Redis Cluster.

Only the hub's reader uses it. Each turn it sends the (un)subscribes the streams' counts call
for (webapp/live/channels.py), many channels to a command, reads everything that arrived, then
waits on every connection and the streams' wake-up pipe at once.
"""

import select
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from webapp.core.quickread import socket_readable
from webapp.extensions import data_redis, is_cluster

DEFAULT_POLL = 10.0  # seconds between pub/sub health checks while idle
# On a cluster each node's connection is asked to answer (PING), and one silent for half the
# cluster's node timeout since it was asked ends the link. A frozen master's replica takes
# its slots once the node timeout has passed, while its subscribers hear nothing; when it
# thaws it even delivers what it wrote meanwhile, then drops (a drill: a stream deaf for the
# failover, then 3 such notifications, whose ids then skipped the gap in the replay). Half
# the timeout: ended before any failover can have happened, yet a node slow for a moment
# (a long script, a fork) is not taken for frozen. Any message read counts as an answer: a
# node streaming a burst behind its PONG is alive.
DEFAULT_NODE_TIMEOUT_S = 15.0  # Redis's own cluster-node-timeout, where CONFIG is refused
MIN_PROBE_LATE_S = 2.0  # a loopback cluster's 1 s timeout: a loaded machine stalls that long
SUBSCRIBE_BATCH = 1000  # channels in one SUBSCRIBE (a cluster takes one SSUBSCRIBE a channel)
REPLIES = ("subscribe", "unsubscribe", "ssubscribe", "sunsubscribe")
MESSAGES = ("message", "smessage")


class Link:
    """A connected pub/sub client; raises redis.RedisError (or OSError) once it drops."""

    def __init__(self, config, name, subscriptions):
        # No retries: redis-py would reconnect and resubscribe behind our back, losing what
        # was published in the gap; a dropped link must end the streams (they replay).
        # TCP keepalive is redis-py 8's default on TCP; naming it would refuse a unix:// URL.
        # RESP2: under RESP3 each message is a push that redis-py routes through its push
        # handler, which looks a logger up and formats a debug line for every one (about
        # 40 % of the read's cost in a 10k-user burst).
        # On a cluster a node's pool has room for a second connection: a pub/sub holds the
        # first for good, and reading the slot map again (_ssubscribe) must not wait on it.
        per_node = 2 if config.get("REDIS_CLUSTER_NODES") else 1
        self.client = data_redis(config, max_connections=per_node, client_name=name,
                                 retry=Retry(NoBackoff(), 0), protocol=2)
        self.cluster = is_cluster(self.client)
        self.subscriptions = subscriptions
        self._asked, self._heard = {}, {}  # node name -> when it was asked, last heard from
        self.probe_late_s = max(MIN_PROBE_LATE_S, _node_timeout_s(self.client) / 2)
        self.probe_every_s = self.probe_late_s / 3
        self.pubsub = self.client.pubsub()
        self.client.ping()  # up: what the streams need is subscribed on it from now on
        subscriptions.relink()

    def send(self):
        """Subscribe and unsubscribe what the streams' counts changed since the last turn."""
        subscribe, unsubscribe = self.subscriptions.changes()
        p = self.pubsub
        on, off = (p.ssubscribe, p.sunsubscribe) if self.cluster else (p.subscribe, p.unsubscribe)
        for i in range(0, len(unsubscribe), SUBSCRIBE_BATCH):
            off(*unsubscribe[i:i + SUBSCRIBE_BATCH])
        if self.cluster:  # one SSUBSCRIBE a channel whichever way
            for channel in subscribe:
                self._ssubscribe(channel)
            return
        for i in range(0, len(subscribe), SUBSCRIBE_BATCH):
            on(*subscribe[i:i + SUBSCRIBE_BATCH])

    def _ssubscribe(self, channel):
        """A master lost while this link had no channel on it goes unnoticed here: its slot
        map still names the dead node, and the first channel of its slots is sent there. The
        map is read again and the channel sent to the new owner, once, rather than ending
        every stream of the process (a drill: a 503, minutes after the failover)."""
        try:
            self.pubsub.ssubscribe(channel)
        except (redis.ConnectionError, redis.TimeoutError):
            name = self.client.get_node_from_key(channel).name
            gone = self.pubsub.node_pubsub_mapping.get(name)
            if gone is not None and gone.subscribed:  # its channels' streams end and replay
                raise
            self.pubsub.node_pubsub_mapping.pop(name, None)
            # not disconnect_startup_nodes_pools: it marks the pub/subs' connections to be
            # made again on their next use, which redis-py would do behind our back
            try:
                self.client.nodes_manager.initialize(disconnect_startup_nodes_pools=False)
            except redis.exceptions.RedisClusterException as exc:  # no node answered
                raise redis.ConnectionError(f"Redis Cluster unreachable: {exc}") from exc
            self.pubsub.ssubscribe(channel)

    def read(self, dispatch):
        """Hand `dispatch(channel, data)` every message that has arrived; note the replies."""
        for name, node in self.nodes():
            while node.subscribed and node.connection is not None:
                if not _ready(node.connection):
                    break
                # Wait for the rest of a message begun: with redis-py's default timeout of 0
                # a message that arrives in pieces (a large one, under a flood) fails the
                # read as a timeout, and the link with it.
                rest = node.connection.socket_timeout
                if self.cluster:  # ClusterPubSub forgets a node's channels as they go
                    message = self.pubsub.get_sharded_message(
                        timeout=rest, target_node=self.client.get_node(node_name=name))
                else:
                    message = _message(node, rest)
                self._heard[name] = time.monotonic()
                if message is None:  # a health-check reply was taken
                    continue
                if message["type"] in MESSAGES:
                    dispatch(message["channel"], message["data"])
                elif message["type"] in REPLIES:
                    if not self.subscriptions.replied(message["channel"]):
                        # Redis unsubscribes a shard channel whose slot changed master (a
                        # failover, a resharding): the streams end and replay on a new link
                        raise redis.ConnectionError(
                            f"{message['channel']} was unsubscribed by the server")

    def probe(self, now=None):
        """On a cluster: ask each node's connection to answer; raise redis.ConnectionError
        for one silent `probe_late_s` since it was asked (its streams end and replay)."""
        if not self.cluster:
            return
        now = time.monotonic() if now is None else now
        for name, node in self.nodes():
            if not node.subscribed or node.connection is None:
                continue
            asked, heard = self._asked.get(name), self._heard.get(name, 0.0)
            if asked is not None and heard < asked:
                if now - asked > self.probe_late_s:
                    raise redis.ConnectionError(
                        f"{name} has not answered for {now - asked:.1f} s")
            elif asked is None or now - asked >= self.probe_every_s:
                node.ping()  # its reply comes in among the messages, as "pong"
                self._asked[name] = now

    def wait(self, timeout=DEFAULT_POLL):
        """Until a message arrives, a stream wakes the reader, or the health-check time (a
        cluster's next probe)."""
        if self.subscriptions.pending():
            return
        if self.cluster:
            timeout = min(timeout, self.probe_every_s)
        # redis-py names no public way to the socket; poll needs it to wait on all at once.
        # poll, not select: a link made again while thousands of streams are open gets a
        # descriptor past 1023, which select refuses (gevent's poll under the web worker).
        poller = select.poll()
        poller.register(self.subscriptions, select.POLLIN)
        for _, node in self.nodes():
            if node.subscribed and node.connection is not None and node.connection._sock:
                poller.register(node.connection._sock, select.POLLIN)
        woken = self.subscriptions.fileno()
        if any(fd == woken for fd, _ in poller.poll(timeout * 1000)):
            self.subscriptions.woke()

    def nodes(self):
        """(node name, PubSub) of each connection: one on a single Redis; on a cluster, one
        for each node holding one of our channels (ClusterPubSub's own)."""
        nodes = getattr(self.pubsub, "node_pubsub_mapping", None)
        return tuple(nodes.items()) if nodes is not None else ((None, self.pubsub),)

    def hang_up(self):
        """Pull the sockets away (any greenlet): a read in progress fails."""
        for _, node in self.nodes():
            try:
                node.connection and node.connection.disconnect()
            except (OSError, AttributeError):
                pass

    def close(self):
        self.pubsub.close()
        self.client.close()


def _node_timeout_s(client):
    """The cluster's cluster-node-timeout in seconds (0 on one Redis), as a node says."""
    if not is_cluster(client):
        return 0.0
    try:
        said = client.config_get("cluster-node-timeout", target_nodes=client.RANDOM)
        return int(said["cluster-node-timeout"]) / 1000
    except (redis.RedisError, KeyError, ValueError, TypeError):  # CONFIG refused (a service)
        return DEFAULT_NODE_TIMEOUT_S


def _message(pubsub, timeout):
    """PubSub.get_message once `_ready` said yes: its steps but its own readiness check (the
    health check's PING when due, the read, its reply left out, the subscription books)."""
    pubsub.check_health()
    response = pubsub.connection.read_response(
        disconnect_on_error=False, push_request=True, timeout=timeout)
    if pubsub.is_health_check_response(response):
        pubsub.health_check_response_counter -= 1
        return None
    return pubsub.handle_message(response)


def _ready(conn):
    """A message can be read without waiting: hiredis holds bytes already read, or the socket
    has some (or was closed: the read then fails, and the link). redis-py's own check,
    `can_read`, polls the socket twice through gevent's emulated poll whenever hiredis holds
    nothing: in a 10k-user burst, as much of the hub's CPU as the messages themselves. This
    one asks the kernel directly (a zero timeout never blocks, so gevent is not needed)."""
    sock = conn._sock
    if sock is None:  # hung up: never let redis-py reconnect (and resubscribe) behind us
        return False
    reader = getattr(conn._parser, "_reader", None)  # hiredis's, pinned in requirements.txt
    if reader is None or hasattr(sock, "pending"):
        # no hiredis, or TLS, where bytes on the socket may be a record with no message
        # in it: redis-py's own check, which reads them without waiting
        return conn.can_read(timeout=0)
    return reader.has_data() or socket_readable(sock)
