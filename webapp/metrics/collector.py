"""What /metrics reads from Redis when scraped: RQ's queues, the breakers, the listeners.

These live in Redis already and every process sees the same values, so one read at scrape
time is exact where a gauge mirrored in each process would drift or double count.
"""

from prometheus_client.core import GaugeMetricFamily
from rq import Queue
from rq.registry import FailedJobRegistry

from webapp import clock, keys
from webapp.core import metrics
from webapp.core.breaker import CLOSED, HALF_OPEN, OPEN, Breaker
from webapp.core.health import DEFAULT_LISTENER_STALE_MS
from webapp.core.queues import QUEUES, STREAM_QUEUE
from webapp.errors import REDIS_FAULTS
from webapp.notify.slowsteps import QUEUES as SLOW_STEP_QUEUES

# Fixed names only: a destination's breaker (delivery-dest:<id>) would be a label per row.
BREAKERS = ("binance", "delivery-email", "delivery-sms", "delivery-push")
BREAKER_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class RedisCollector:
    """A prometheus_client collector; `data` and `rq` return the two Redis clients (they are
    the same one unless the data plane is a cluster)."""

    def __init__(self, data, rq, shards):
        self.data, self.rq, self.shards = data, rq, shards

    def collect(self):
        up = GaugeMetricFamily(metrics.REDIS_UP, "1 when Redis answered this scrape.")
        try:
            families = [*self._queues(self.rq()), *self._slow_steps(self.data()),
                        *self._breakers(self.data()), *self._listeners(self.data())]
        except REDIS_FAULTS:
            families = []
        up.add_metric([], 1 if families else 0)
        return [up, *families]

    def _queues(self, r):
        names = (*QUEUES, STREAM_QUEUE)
        with r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.llen(Queue.redis_queue_namespace_prefix + name)
                pipe.zcard(FailedJobRegistry(name, connection=r).key)
            counts = pipe.execute()
        depth = GaugeMetricFamily(metrics.QUEUE_DEPTH, "Jobs waiting in an RQ queue.",
                                  labels=["queue"])
        failed = GaugeMetricFamily(metrics.QUEUE_FAILED, "Jobs in an RQ queue's failed "
                                   "registry (kept 7 days).", labels=["queue"])
        for i, name in enumerate(names):
            depth.add_metric([name], counts[2 * i])
            failed.add_metric([name], counts[2 * i + 1])
        return depth, failed

    def _slow_steps(self, r):
        """Batches of routed notifications waiting for their slow steps (webapp/notify/
        slowsteps.py), in the data plane, and those parked after failing too often."""
        with r.pipeline(transaction=False) as pipe:
            for name in SLOW_STEP_QUEUES:
                pipe.xlen(keys.routed(name))
            pipe.xlen(keys.ROUTED_DEAD)
            *waiting, parked = pipe.execute()
        family = GaugeMetricFamily(metrics.SLOW_STEPS_WAITING, "Batches of notifications "
                                   "waiting for their slow steps (audit, deliveries).",
                                   labels=["queue"])
        for name, count in zip(SLOW_STEP_QUEUES, waiting, strict=True):
            family.add_metric([name], count)
        dead = GaugeMetricFamily(metrics.SLOW_STEPS_PARKED, "Batches parked after failing "
                                 "their slow steps too often (tb:{routed}:dead).")
        dead.add_metric([], parked)
        return family, dead

    def _breakers(self, r):
        family = GaugeMetricFamily(metrics.BREAKER_STATE, "Circuit breaker: 0 closed, "
                                   "1 half-open, 2 open.", labels=["breaker"])
        for name in BREAKERS:
            family.add_metric([name], BREAKER_VALUES[Breaker(name, redis=r).state()["state"]])
        return (family,)

    def _listeners(self, r):
        # this process's count, or the running listeners' where theirs is larger (as health)
        shards = max(self.shards, int(r.get(keys.LISTENER_SHARDS) or 1))
        with r.pipeline(transaction=False) as pipe:
            for shard in range(shards):
                pipe.hgetall(keys.listener_status(shard))
            statuses = pipe.execute()
        connections = GaugeMetricFamily(metrics.LISTENER_CONNECTIONS, "Open Binance "
                                        "connections of a listener shard.", labels=["shard"])
        up = GaugeMetricFamily(metrics.LISTENER_UP, "1 when a listener shard beats and is "
                               "connected.", labels=["shard"])
        now_ms = clock.now_ms()
        for shard, status in enumerate(statuses):
            beat = int(status.get("heartbeat") or 0)
            alive = beat and now_ms - beat <= DEFAULT_LISTENER_STALE_MS
            connected = bool(alive) and status.get("state") == "connected"
            connections.add_metric([str(shard)], int(status.get("connections") or 0)
                                   if alive else 0)
            up.add_metric([str(shard)], 1 if connected else 0)
        return connections, up
