"""Error pages and JSON errors; a Redis or database outage answers 503 everywhere."""

import logging
import random

import redis
import sqlalchemy.exc
from flask import jsonify, make_response, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, NotFound, UnprocessableEntity

from webapp.extensions import db

RETRY_AFTER_S = 5
# Faults of a dependency, not of our code: the same request may well succeed in a moment.
REDIS_FAULTS = (redis.ConnectionError, redis.TimeoutError, redis.exceptions.ReadOnlyError,
                redis.exceptions.OutOfMemoryError, redis.exceptions.MasterDownError,
                redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError,
                redis.exceptions.SlotNotCoveredError)  # a cluster's slot mid-failover
# Locked, read-only, full or unreachable database; lock_timeout; no pooled connection free.
SQL_FAULTS = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.TimeoutError)


# said inside a failed connection's message when it is the settings' fault: it stays
NEEDS_A_HAND = ("does not exist", "authentication failed", "no pg_hba.conf entry",
                "permission denied", "unable to open database file")


def passes_by_itself(exc):
    """A database fault that passes by itself: locked, busy, or away a moment (an
    OperationalError). A schema's fault, or a connection refused for a wrong database name,
    user or password, is none of these."""
    orig = getattr(exc, "orig", None)
    said = str(orig if orig is not None else exc).lower()
    if any(words in said for words in NEEDS_A_HAND):
        return False
    return bool(getattr(exc, "connection_invalidated", False)) or any(
        word in said for word in ("locked", "lock timeout", "busy", "connection", "server"))


STALE_PAGE = ("This page is out of date (its security token expired or belongs to another "
              "sign-in): reload it and try again. Nothing was changed.")
GONE = "That is no longer here: it was deleted, perhaps in another tab. Reload the page."
FALLBACK_503 = ('<!doctype html><html lang="en"><meta charset="utf-8"><title>Unavailable</title>'
                '<link rel="icon" href="data:,"><h1>Temporarily unavailable</h1><p>Tickerbell '
                'cannot reach its data store. Try again in a few seconds: <a href="">reload</a>.'
                '</p></html>')
# The live feed while Redis is away: an empty stream that asks the browser to come back in 2
# to 6 s (spread, so a process's thousands of tabs do not all come back at once). Its own
# EventSource retry keeps Last-Event-ID; a 503 would close it, and htmx's SSE extension would
# open the next one on its own backoff, up to 64 s after Redis is back.
STREAM_RETRY_MS = (2000, 6000)

log = logging.getLogger(__name__)


def wants_json():
    """The API, inbound webhooks (machines posting), callers that ask for JSON and those
    that send it (a page's script, as its push subscription)."""
    return (request.path.startswith(("/api/", "/hooks/")) or request.is_json
            or request.accept_mimetypes.best == "application/json")


def is_htmx():
    """True when htmx sent the request, so it wants a fragment rather than the page."""
    return request.headers.get("HX-Request") == "true"


def json_error(status, error, detail=None):
    response = jsonify({"error": error, "detail": detail})
    response.status_code = status
    return response


def _http_error(exc: HTTPException):
    if isinstance(exc, CSRFError):  # flask-wtf's words name the mechanism, not what to do
        exc.description = STALE_PAGE
    elif isinstance(exc, NotFound) and is_htmx() and exc.description == NotFound.description:
        exc.description = GONE  # werkzeug's speaks of a URL typed by hand
    if wants_json() or is_htmx():  # htmx shows the detail in its error line (static/js/app.js)
        return json_error(exc.code, exc.name.lower().replace(" ", "_"), exc.description)
    template = "errors/404.html" if exc.code == 404 else "errors/error.html"
    try:
        return render_template(template, error=exc), exc.code
    except REDIS_FAULTS as fault:  # the layout loads the signed-in user: sessions in Redis,
        return _redis_down(fault)
    except SQL_FAULTS as fault:  # the user's row in SQL
        return _sql_error(fault)


def _rollback():
    try:
        db.session.rollback()  # a failed flush leaves the session unusable, even for the page
    except SQL_FAULTS:
        log.warning("rollback failed; the pool will replace the connection", exc_info=True)


def _unavailable(detail):
    _rollback()
    if request.endpoint == "live.stream":
        response = make_response(f"retry: {random.randint(*STREAM_RETRY_MS)}\n\n", 200)
        response.headers.update({"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    elif wants_json():
        response = json_error(503, "service_unavailable", detail)
    else:
        try:
            page = render_template("errors/503.html", detail=detail)
        except (*REDIS_FAULTS, *SQL_FAULTS):  # the layout itself needs the user, from SQL
            page = FALLBACK_503
        response = make_response(page, 503)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _redis_down(exc):
    log.warning("redis unavailable: %s", exc)
    return _unavailable("The notification store is unavailable; try again shortly.")


def _not_text(exc):
    """A lone UTF-16 surrogate ("\udc00") parses as JSON but no store can hold it: 422."""
    db.session.rollback()
    detail = "Text must be valid Unicode: a lone UTF-16 surrogate is not a character."
    if wants_json() or is_htmx():
        return json_error(422, "invalid_input", detail)
    return render_template("errors/error.html", error=UnprocessableEntity(detail)), 422


def _sql_error(exc):
    if isinstance(getattr(exc, "orig", None), UnicodeEncodeError):
        return _not_text(exc)
    if not isinstance(exc, SQL_FAULTS) and not getattr(exc, "connection_invalidated", False):
        return _internal(exc)  # a bad statement is our fault, not the database's
    log.warning("database unavailable: %s", exc)
    return _unavailable("The database is busy or unavailable; try again shortly.")


def _internal(exc):
    log.exception("unhandled error")
    _rollback()  # the layout loads the user: a transaction the error broke would fail it too
    if wants_json():
        return json_error(500, "internal_error", "Something went wrong on our side.")
    return render_template("errors/500.html"), 500


def init_app(app):
    app.register_error_handler(HTTPException, _http_error)
    for exc in REDIS_FAULTS:
        app.register_error_handler(exc, _redis_down)
    app.register_error_handler(sqlalchemy.exc.SQLAlchemyError, _sql_error)
    app.register_error_handler(UnicodeEncodeError, _not_text)
    app.register_error_handler(Exception, _internal)
