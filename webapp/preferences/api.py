"""Notification settings in the JSON API: what the settings page edits, as one object."""

from flask import g, jsonify

from webapp.alerts.api import json_body
from webapp.api.blueprint import bp
from webapp.errors import json_error
from webapp.exceptions import InvalidInput
from webapp.preferences import service as preferences

NUMBERS = ("max_per_minute", "insist_every_min", "insist_rounds")
# JSON types per field, before the settings page's own checks (which take form text)
TYPES = {
    **{f: (bool, "true or false.") for f in preferences.BOOLEAN_FIELDS},
    **{f: (int, "A whole number.") for f in NUMBERS},
    **{f: ((str, type(None)), "Text, or null to clear it.")
       for f in preferences.TEXT_FIELDS if f not in NUMBERS},
    "insist_types": ((list, type(None)), "A list of notification types, or null for the "
                                         "default (urgent and critical)."),
}


def _is(value, kind):
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _as_json(pref):
    body = {field: getattr(pref, field) for field in preferences.FIELDS}
    body["insist_types"] = sorted(preferences.insisting_types(pref))  # null: the default
    return body


@bp.get("/preferences")
def get_preferences():
    return jsonify(_as_json(preferences.preferences_for(g.api_user.id)))


@bp.patch("/preferences")
def update_preferences():
    """Some settings, all or nothing (422 per field); `insist_types: null` is the default."""
    try:
        values = json_body()
        wrong = {f: TYPES[f][1] for f in values if f in TYPES and not _is(values[f], TYPES[f][0])}
        if wrong:  # with what else is wrong: every field's error in one answer
            try:
                preferences.clean({f: v for f, v in values.items() if f not in wrong})
            except InvalidInput as exc:
                wrong |= exc.errors
            raise InvalidInput(wrong)
        pref = preferences.update(g.api_user.id, values)
    except InvalidInput as exc:
        return json_error(422, "invalid_input", exc.errors)
    return jsonify(_as_json(pref))
