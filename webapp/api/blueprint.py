"""The JSON API (/api/v1): session or API-key auth, JSON errors, never a redirect.

Credentials are checked before routing's answer: a caller without them gets 401 on every
path under /api/v1 (but the public two), so 404 and 405 tell only a signed-in caller which
routes exist.
"""

from flask import Blueprint, g, jsonify, request
from flask_login import current_user

from webapp.accounts import service as accounts
from webapp.errors import json_error
from webapp.extensions import csrf
from webapp.notify import service_tokens

bp = Blueprint("api", __name__, url_prefix="/api/v1")

PUBLIC_PATHS = {f"{bp.url_prefix}/health", f"{bp.url_prefix}/openapi.json"}
SERVICE = {"api.post_events"}  # service tokens only; they are refused everywhere else


def _under_api(path):
    return path == bp.url_prefix or path.startswith(bp.url_prefix + "/")


@bp.before_app_request  # app-wide, so it runs when no route matched too (404, 405)
def authenticate():
    if not _under_api(request.path) or request.path in PUBLIC_PATHS:
        return None
    g.api_user = None
    if request.endpoint in SERVICE:
        return service_tokens.authenticate_request()
    refused = _authenticate_user()
    if refused is not None and request.url_rule is None and service_tokens.token_for(
            service_tokens.presented()):
        return None  # a service caller on a path or method without a route: its 404 or 405
    return refused


def _authenticate_user():
    """Set g.api_user from an API key or the session; a 401 response if neither is good."""
    key = accounts.presented_secret("X-API-Key")
    if key:
        g.api_user = accounts.user_for_api_key(key)
        if g.api_user is None:
            return json_error(401, "unauthorized", "The API key is unknown or revoked.")
        return None
    if current_user.is_authenticated:
        g.api_user = current_user._get_current_object()
        if request.url_rule is not None and request.method not in ("GET", "HEAD", "OPTIONS"):
            csrf.protect()  # a session caller is a browser: it must send the token
        return None
    return json_error(401, "unauthorized", "Log in or send an API key in X-API-Key.")


@bp.get("/me")
def me():
    return jsonify({"id": g.api_user.id, "email": g.api_user.email})
