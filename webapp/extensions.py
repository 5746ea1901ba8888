"""Extensions, created unbound here and bound to the app in create_app."""

import threading
from functools import partial

import redis
from flask import current_app
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sock import Sock
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy.orm import DeclarativeBase

from webapp.core.quickread import PARSER


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message_category = "info"
csrf = CSRFProtect()
sock = Sock()


REDIS_POOL_SIZE = 100
REDIS_POOL_WAIT_S = 5


def data_redis(config, max_connections=REDIS_POOL_SIZE, **options):
    """A client of the data plane: the Redis Cluster of REDIS_CLUSTER_NODES, else REDIS_URL.

    Blocking pools (one per node on a cluster): when every connection is busy (a burst of
    streams opening at once), a caller waits its turn for up to REDIS_POOL_WAIT_S instead of
    failing at once. `options` are redis-py's connection options (timeouts, client_name).
    """
    options = {"decode_responses": True, "health_check_interval": 30,
               "socket_connect_timeout": 2, "socket_timeout": 5, **options}
    nodes = config.get("REDIS_CLUSTER_NODES")
    if nodes:
        # redis-py 6 deprecates this on the cluster's node clients (a warning, an error under
        # pytest); the cluster's own Retry decides on timeouts there
        options.pop("retry_on_timeout", None)

        def connect(named):  # it reads the cluster's slot map now: down is a Redis down
            # redis-py makes each node's pool with connection_pool_class only for a client
            # made from a URL (else a plain pool, with its node options filtered: no
            # parser_class), so the first node is given as one. Its node clients run no
            # health check, as before.
            (host, port), rest = named[0], named[1:]
            host = f"[{host}]" if ":" in host else host  # an IPv6 address, in a URL
            return DataCluster(
                url=f"redis://{host}:{port}",
                startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in rest],
                connection_pool_class=partial(redis.BlockingConnectionPool,
                                              timeout=REDIS_POOL_WAIT_S, **PARSER),
                max_connections=max_connections, **options)

        try:
            client = connect(nodes)
        except redis.exceptions.RedisClusterException as error:
            client = _through_seen(config, nodes, connect, error)
        remember_cluster_nodes(config, client)
        return client
    pool = redis.BlockingConnectionPool.from_url(
        config["REDIS_URL"], max_connections=max_connections, timeout=REDIS_POOL_WAIT_S,
        **PARSER, **options)
    return redis.Redis(connection_pool=pool)


SEEN_TTL_S = 30 * 24 * 3600
CONTROL_TIMEOUT_S = 1.0


def _control(config):
    """REDIS_URL, where the cluster's nodes as seen are kept: a short-lived, quick client."""
    return redis.Redis.from_url(config["REDIS_URL"], decode_responses=True,
                                socket_timeout=CONTROL_TIMEOUT_S,
                                socket_connect_timeout=CONTROL_TIMEOUT_S)


def _seen_key(config):
    from webapp import keys

    return keys.cluster_seen(",".join(f"{h}:{p}" for h, p in config["REDIS_CLUSTER_NODES"]))


def remember_cluster_nodes(config, client):
    """Keep every node `client` found, with its node id (best effort: REDIS_URL away, or the
    nodes unreadable, what was seen before stays)."""
    if not config.get("REDIS_URL"):
        return
    try:  # replicas too (get_nodes() holds the masters): they are the ones that take over
        found = sorted(f"{address}={node['node_id']}"
                       for address, node in client.cluster_nodes().items()
                       if address.rpartition(":")[0] and node.get("node_id")
                       and "fail" not in node.get("flags", ""))
        if not found:  # a node that knows no address
            return
        with _control(config) as control:
            control.set(_seen_key(config), ",".join(found), ex=SEEN_TTL_S)
    except redis.RedisError:
        pass


def cluster_nodes_seen(config):
    """{(host, port): node id} of the cluster as a process last found it; {} when unknown."""
    if not config.get("REDIS_URL"):
        return {}
    try:
        with _control(config) as control:
            text = control.get(_seen_key(config)) or ""
    except redis.RedisError:
        return {}
    found = {}
    for entry in filter(None, text.split(",")):
        address, _, node_id = entry.partition("=")
        host, _, port = address.rpartition(":")
        if host and port.isdigit() and node_id:
            found[(host, int(port))] = node_id
    return found


def _through_seen(config, nodes, connect, error):
    """The nodes named may all have failed over to others: the cluster through those seen
    last (alone: each named node down would cost its connect timeout again), if it is the
    one they were seen in."""
    seen = {node: nid for node, nid in cluster_nodes_seen(config).items() if node not in nodes}
    why = "no node answers"
    try:
        client = connect(list(seen)) if seen else None
    except redis.exceptions.RedisClusterException:
        client = None
    same = client is not None and _same_cluster(client, set(seen.values()))
    if client is not None and not same:
        client.close()
        if same is False:
            why = "no node answers, and those seen last serve another cluster now"
        client = None
    if client is None:
        tried = ", ".join(f"{h}:{p}" for h, p in (*nodes, *seen))
        raise redis.ConnectionError(f"Redis Cluster unreachable: {why} ({tried})") from error
    return client


def _same_cluster(client, node_ids):
    """Whether the cluster `client` reached holds a node of those seen (by id, which an
    address reused by another cluster does not keep); None when it cannot be read."""
    try:
        return bool(node_ids & {node.get("node_id") for node in client.cluster_nodes().values()})
    except redis.RedisError:
        return None


class DataCluster(redis.RedisCluster):
    """redis-py's cluster client, whose close() also closes its nodes' pools: those made
    with connection_pool_class are handed to their node clients, which never close a pool
    handed to them, so their sockets stayed open until collected."""

    def close(self):
        self.disconnect_connection_pools()
        super().close()


def is_cluster(r):
    return isinstance(r, redis.RedisCluster)


def close_data_redis(r):
    """Close a client from `data_redis` with its sockets: redis.Redis.close() leaves a pool
    handed to it open, and a listener job ended (its lease lost) then left one per run."""
    if is_cluster(r):
        r.close()
    else:
        r.connection_pool.disconnect()


def init_redis(app):
    """One data-plane client per process. A cluster client connects when made, so it is made
    on first use: a process must start, and answer 503, while the cluster is down."""
    cluster = app.config.get("REDIS_CLUSTER_NODES")
    app.extensions["redis"] = None if cluster else data_redis(app.config, retry_on_timeout=False)
    # made with the app, so under gevent after the patching: a lock taken across I/O
    app.extensions["redis_making"] = threading.Lock()


def get_redis() -> redis.Redis:
    """The process's data-plane client; redis.ConnectionError while it cannot be made."""
    return _client("redis", retry_on_timeout=False)


HEALTH_TIMEOUT_S = 1.0
HEALTH_POOL_SIZE = 4


def health_redis() -> redis.Redis:
    """A data-plane client for the health check alone, whose every wait gives up after
    HEALTH_TIMEOUT_S: a load balancer's probe gets its 503 in about a second while Redis
    hangs (a frozen server holds every other read for its 5 s)."""
    return _client("health_redis", max_connections=HEALTH_POOL_SIZE, retry_on_timeout=False,
                   socket_timeout=HEALTH_TIMEOUT_S, socket_connect_timeout=HEALTH_TIMEOUT_S,
                   retry=Retry(NoBackoff(), 0))  # once: a cluster's client retries 3 times


def _client(name, **options):
    client = current_app.extensions.get(name)
    if client is None:
        with current_app.extensions["redis_making"]:  # a first request and a heartbeat
            client = current_app.extensions.get(name)
            if client is None:
                client = data_redis(current_app.config, **options)
                current_app.extensions[name] = client
    return client
