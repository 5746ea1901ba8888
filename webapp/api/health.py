"""Public API endpoints: the health report and the OpenAPI document."""

from flask import current_app, jsonify

from webapp.api.blueprint import bp
from webapp.api.openapi import document
from webapp.core import database, health
from webapp.delivery.stats import delivery_stats
from webapp.errors import REDIS_FAULTS, SQL_FAULTS
from webapp.extensions import HEALTH_TIMEOUT_S, db, health_redis
from webapp.live import fanout


@bp.get("/health", endpoint="health")
def health_check():
    body, healthy = health.report(health_redis, streams=fanout.stream_count(current_app))
    body["deliveries"] = None  # per channel, 24 h: read from SQL, which may be locked
    if body["redis"] == "ok":
        try:
            database.wait_at_most(HEALTH_TIMEOUT_S * 1000)
            body["deliveries"] = delivery_stats(redis=health_redis())
        except SQL_FAULTS:  # the report stands without them
            db.session.rollback()
        except REDIS_FAULTS:  # Redis went between the report and these: the report says so
            body.update(redis="down", status="degraded")
            healthy = False
    response = jsonify(body)
    response.status_code = 200 if healthy else 503
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/openapi.json")
def openapi():
    return jsonify(document())
