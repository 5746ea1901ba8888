"""Error pages and JSON errors; Redis outages answer 503 everywhere."""

import logging

import redis
from flask import jsonify, render_template, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


def wants_json():
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def is_htmx():
    """True when htmx sent the request, so it wants a fragment rather than the page."""
    return request.headers.get("HX-Request") == "true"


def json_error(status, error, detail=None):
    response = jsonify({"error": error, "detail": detail})
    response.status_code = status
    return response


def _http_error(exc: HTTPException):
    if wants_json():
        return json_error(exc.code, exc.name.lower().replace(" ", "_"), exc.description)
    template = "errors/404.html" if exc.code == 404 else "errors/error.html"
    return render_template(template, error=exc), exc.code


def _redis_down(exc):
    log.warning("redis unavailable: %s", exc)
    detail = "The notification store is unavailable; try again shortly."
    if wants_json():
        return json_error(503, "service_unavailable", detail)
    return render_template("errors/503.html", detail=detail), 503


def _internal(exc):
    log.exception("unhandled error")
    if wants_json():
        return json_error(500, "internal_error", "Something went wrong on our side.")
    return render_template("errors/500.html"), 500


def init_app(app):
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(redis.ConnectionError, _redis_down)
    app.register_error_handler(redis.TimeoutError, _redis_down)
    app.register_error_handler(Exception, _internal)
