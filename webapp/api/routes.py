"""The JSON API (/api/v1): session or API-key auth, JSON errors, never a redirect."""

from flask import Blueprint, g, jsonify, request
from flask_login import current_user

from webapp import accounts, service_tokens
from webapp.errors import json_error
from webapp.extensions import csrf

bp = Blueprint("api", __name__, url_prefix="/api/v1")

PUBLIC = {"api.health", "api.openapi"}
SERVICE = {"api.post_events"}  # service tokens only; they are refused everywhere else


@bp.before_request
def authenticate():
    g.api_user = None
    if request.endpoint in SERVICE:
        return service_tokens.authenticate_request()
    key = accounts.presented_secret("X-API-Key")
    if key:
        g.api_user = accounts.user_for_api_key(key)
        if g.api_user is None:
            return json_error(401, "unauthorized", "The API key is unknown or revoked.")
        return None
    if current_user.is_authenticated:
        g.api_user = current_user._get_current_object()
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            csrf.protect()  # a session caller is a browser: it must send the token
        return None
    if request.endpoint not in PUBLIC:
        return json_error(401, "unauthorized", "Log in or send an API key in X-API-Key.")
    return None


@bp.get("/me")
def me():
    return jsonify({"id": g.api_user.id, "email": g.api_user.email})
