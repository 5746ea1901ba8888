"""Public API endpoints: the health report and the OpenAPI document."""

from flask import current_app, jsonify

from webapp.api.blueprint import bp
from webapp.api.openapi import document
from webapp.core import health
from webapp.delivery.stats import delivery_stats
from webapp.extensions import health_redis
from webapp.live import fanout


@bp.get("/health", endpoint="health")
def health_check():
    body, healthy = health.report(health_redis, streams=fanout.stream_count(current_app))
    body["deliveries"] = (delivery_stats(redis=health_redis()) if body["redis"] == "ok"
                          else None)  # per channel, 24 h
    response = jsonify(body)
    response.status_code = 200 if healthy else 503
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/openapi.json")
def openapi():
    return jsonify(document())
