"""GET /metrics for Prometheus: loopback callers, or any caller with METRICS_TOKEN.

Anyone else gets 404, as if there were no such page (the admin pages do the same). A request
that came through a proxy (it carries X-Forwarded-For, Forwarded or X-Real-IP) is not
local, however local its REMOTE_ADDR: a reverse proxy on the same host would otherwise open
the page to the internet. Those headers never grant access, only take it away.
"""

import hmac
import ipaddress

from flask import Blueprint, Response, abort, current_app, request
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from webapp.core import metrics
from webapp.core.queues import rq_connection
from webapp.extensions import get_redis
from webapp.metrics.collector import RedisCollector

bp = Blueprint("metrics", __name__)

FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")


def _loopback():
    if any(request.headers.get(name) for name in FORWARDING_HEADERS):
        return False
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    # ::ffff:127.0.0.1, an IPv4 caller of a dual-stack socket ([::]): Python 3.11 calls it
    # no loopback
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _token_ok():
    token = current_app.config.get("METRICS_TOKEN") or ""
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(
        presented.strip().encode(), token.encode())


class _Sources:
    """The registries /metrics writes out, in turn (generate_latest only calls collect())."""

    def __init__(self, *sources):
        self.sources = sources

    def collect(self):
        for source in self.sources:
            yield from source.collect()


def _registry():
    metrics.count_from_zero()
    shards = max(1, int(current_app.config.get("LISTENER_SHARDS") or 1))
    redis_values = RedisCollector(get_redis, rq_connection, shards)
    path = metrics.multiprocess_dir()
    if path is None:
        return _Sources(REGISTRY, redis_values)
    from prometheus_client import multiprocess

    metrics.forget_dead_streams(path)
    every_process = CollectorRegistry()
    multiprocess.MultiProcessCollector(every_process, path)
    return _Sources(every_process, redis_values)


@bp.get("/metrics")
def scrape():
    if not (_token_ok() or _loopback()):
        abort(404)
    response = Response(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response
