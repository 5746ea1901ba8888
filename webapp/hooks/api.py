"""Hook endpoints of the JSON API: the URL is in the answer to POST, and nowhere after."""

from flask import g, jsonify

from webapp.alerts.api import json_body
from webapp.api.blueprint import bp
from webapp.errors import json_error
from webapp.exceptions import InvalidInput, NotFound
from webapp.hooks import service as hooks


@bp.post("/hooks")
def create_hook():
    try:
        body = json_body()
        unknown = sorted(set(body) - {"name"})
        if unknown:  # refused, not ignored, as the alerts' are
            raise InvalidInput({name[:40]: "Not a field of a hook: send its name."
                                for name in unknown})
        hook, url = hooks.create(g.api_user.id, body.get("name"))
    except InvalidInput as exc:
        return json_error(422, "invalid_input", exc.errors)
    return jsonify({**hooks.to_json(hook), "url": url}), 201


@bp.get("/hooks")
def list_hooks():
    return jsonify([hooks.to_json(h) for h in hooks.live_hooks(g.api_user.id)])


@bp.delete("/hooks/<int:hook_id>")
def delete_hook(hook_id):
    try:
        hooks.revoke(g.api_user.id, hook_id)
    except NotFound:
        return json_error(404, "not_found", "No such hook.")
    return "", 204
