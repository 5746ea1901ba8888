"""The OpenAPI 3.1 document for /api/v1. tests/test_openapi.py keeps it equal to the routes."""

from webapp.config import VERSION
from webapp.notify.types import PRIORITIES, TYPES

USER_AUTH = [{"apiKey": []}, {"bearer": []}, {"session": []}]


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema, description):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description):
    return _json(_ref("Error"), description)


def _nullable(kind, **extra):
    return {"type": [kind, "null"], **extra}


ERRORS = {"401": _error("No session or API key, or an unknown key."),
          "413": _error("A body over the route's limit: 16 KiB, a full batch for events."),
          "503": _error("Redis is unavailable; try again shortly.")}
NID = {"name": "nid", "in": "path", "required": True, "schema": {"type": "string"}}


def _op(summary, responses, security=USER_AUTH, **extra):
    op = {"summary": summary, "responses": responses, **extra}
    if security is not None:
        op["security"] = security
    return op


def _notification_paths():
    item = _json(_ref("Notification"), "The notification.")
    missing = {"404": _error("Missing, expired or another user's notification."), **ERRORS}
    query = [
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                     "maximum": 100, "default": 20}},
        {"name": "cursor", "in": "query", "schema": {"type": "string"},
         "description": "The X-Next-Cursor of the previous page."},
        {"name": "unread", "in": "query", "schema": {"type": "string", "enum": ["1", "0"]}},
        {"name": "type", "in": "query", "schema": {"type": "string", "enum": sorted(TYPES)}},
    ]
    page_headers = {
        "X-Unread-Count": {"schema": {"type": "integer"}},
        "X-Next-Cursor": {"schema": {"type": "string"}, "description": "Absent on the last page."},
        "Link": {"schema": {"type": "string"}, "description": 'rel="next", when there is one.'},
    }
    listing = {**_json({"type": "array", "items": _ref("Notification")},
                       "Newest first; the last 7 days."), "headers": page_headers}
    return {
        "/notifications": {"get": _op("List notifications", {
            "200": listing, "400": _error("A bad limit, cursor, unread or type."), **ERRORS},
            parameters=query)},
        "/notifications/{nid}": {
            "get": _op("One notification", {"200": item, **missing}, parameters=[NID]),
            "delete": _op("Delete a notification", {"204": {"description": "Deleted."},
                                                    **missing}, parameters=[NID])},
        "/notifications/{nid}/read": {"patch": _op("Mark a notification read (idempotent)", {
            "200": item, **missing}, parameters=[NID])},
        "/notifications/{nid}/ack": {"post": _op(
            "Acknowledge a notification that insists: its reminders stop (the first one is kept)",
            {"200": _json(_ref("Acknowledgement"), "Acknowledged, now or before."),
             "409": _error("Its type does not insist for you: nothing to acknowledge."),
             **missing}, parameters=[NID])},
        "/notifications/read-all": {"post": _op("Mark every notification read", {"200": _json(
            {"type": "object", "properties": {"updated": {"type": "integer"},
                                              "unread_count": {"type": "integer"}}},
            "How many changed."), **ERRORS})},
    }


def _alert_paths():
    alert_id = {"name": "alert_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    body = {"required": True, "content": {"application/json": {"schema": _ref("AlertCreate")}}}
    return {
        "/alerts": {
            "get": _op("List alerts", {"200": _json({"type": "array", "items": _ref("Alert")},
                                                    "The caller's alerts."), **ERRORS}),
            "post": _op("Create an alert", {"201": _json(_ref("Alert"), "Created."),
                                            "422": _error(
                                                "Invalid input, per field; a symbol Binance "
                                                "does not trade names close matches."),
                                            **ERRORS}, requestBody=body)},
        "/alerts/{alert_id}": {
            "patch": _op("Edit an alert", {
                "200": _json(_ref("Alert"), "Edited."), "404": _error("No such alert."),
                "422": _error("Invalid input, per field; nothing was changed."), **ERRORS},
                parameters=[alert_id], requestBody={"required": True, "content": {
                    "application/json": {"schema": _ref("AlertPatch")}}}),
            "delete": _op("Delete an alert", {
                "204": {"description": "Deleted."}, "404": _error("No such alert."), **ERRORS},
                parameters=[alert_id])},
    }


def _other_paths():
    health = _json(_ref("Health"), "Healthy.")
    event_body = {"required": True, "content": {"application/json": {"schema": {
        "oneOf": [_ref("Event"), {"type": "array", "items": _ref("Event")},
                  {"type": "object", "properties": {"events": {
                      "type": "array", "items": _ref("Event")}}}]}}}}
    accepted = _json({"type": "object"}, "Accepted: ids per event.")
    return {
        "/me": {"get": _op("The caller", {"200": _json({"type": "object", "properties": {
            "id": {"type": "integer"}, "email": {"type": "string"}}}, "The user."),
            "401": ERRORS["401"]})},
        "/health": {"get": _op("Health", {"200": health, "503": _json(
            _ref("Health"),
            "Degraded: Redis down, market feed down, circuit open or a process missing.")},
            security=[])},
        "/openapi.json": {"get": _op("This document", {"200": _json({"type": "object"},
                                                                    "OpenAPI 3.1.")},
                                     security=[])},
        "/events": {"post": _op("Publish events (service token)", {
            "202": accepted, "422": _json({"type": "object"}, "Some or all rejected."),
            "409": _error("Same Idempotency-Key still in progress."), **ERRORS},
            security=[{"serviceToken": []}], requestBody=event_body)},
        "/audit": {"get": _op("Critical notifications (audit trail)", {
            "200": _json({"type": "object"}, "items, next_before"),
            "422": _error("Bad limit or before."), **ERRORS}, parameters=[
            {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                        "maximum": 200, "default": 50}},
            {"name": "before", "in": "query", "schema": {"type": "integer"}}])},
    }


def _hook_paths():
    hook = {"type": "object", "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"}, "prefix": {"type": "string"},
        "created_at": {"type": "string"}, "last_used_at": _nullable("string")}}
    created = {"type": "object", "properties": {**hook["properties"], "url": {
        "type": "string", "description": "POST alerts here (README, Inbound webhooks); "
                                         "shown in this answer only."}}}
    name = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}}}}
    hook_id = {"name": "hook_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    return {
        "/hooks": {
            "post": _op("Create an inbound webhook", {
                "201": _json(created, "The hook, with its URL (once)."),
                "422": _error("A bad name, or too many hooks."), **ERRORS}, requestBody=name),
            "get": _op("Your live inbound webhooks (no URLs)", {
                "200": _json({"type": "array", "items": hook}, "Newest first."), **ERRORS})},
        "/hooks/{hook_id}": {"delete": _op("Revoke an inbound webhook", {
            "204": {"description": "Revoked: its URL answers 404."},
            "404": _error("Missing, revoked or another user's hook."), **ERRORS},
            parameters=[hook_id])},
    }


def _preference_paths():
    prefs = {"type": "object", "description": (
        "The notification settings page's fields: booleans (the toggles), whole numbers "
        "(max_per_minute 1-1000, insist_every_min 1-1440, insist_rounds 1-20), text or null "
        "(quiet_start, quiet_end as HH:MM, timezone, phone, delivery_email) and insist_types "
        "(a list of types; null in a PATCH: the default, urgent and critical)")}
    return {"/preferences": {
        "get": _op("Your notification settings", {
            "200": _json(prefs, "Every setting; insist_types as in effect."), **ERRORS}),
        "patch": _op("Change some settings, all or nothing", {
            "200": _json(prefs, "Every setting after the change."),
            "422": _error("Per field: what was wrong; nothing changed."), **ERRORS},
            requestBody={"required": True, "content": {"application/json": {"schema": prefs}}}),
    }}


def _destination_paths():
    s, types = {"type": "string"}, {"type": ["array", "null"], "items": {"enum": sorted(TYPES)},
                                    "description": "null: what the real-time toggles let out"}
    dest = {"type": "object", "properties": {
        "id": {"type": "integer"}, "kind": {"enum": ["apprise", "webhook"]}, "name": s,
        "url_masked": s, "types": types, "escalate": {"type": "boolean"},
        "enabled": {"type": "boolean"}, "disabled_reason": _nullable("string"),
        "failures": {"type": "integer"}, "created_at": s, "last_sent_at": _nullable("string"),
        "secret": {**s, "description": "a generated webhook secret: in the create answer only"}}}
    create = {"type": "object", "required": ["kind", "name", "url"], "properties": {
        "kind": {"enum": ["apprise", "webhook"]}, "name": {**s, "maxLength": 80},
        "url": {**s, "maxLength": 2000, "description": (
            "apprise: any URL Apprise understands (tgram://, discord://, ntfy://, json://...); "
            "webhook: https:// (http:// only with DESTINATIONS_ALLOW_PRIVATE)")},
        "secret": {**s, "minLength": 16, "maxLength": 200,
                   "description": "webhook only; absent: one is generated"},
        "types": types, "escalate": {"type": "boolean", "default": True}}}
    patch = {"type": "object", "properties": {
        "name": {**s, "maxLength": 80}, "enabled": {"type": "boolean"}, "types": types,
        "escalate": {"type": "boolean"}}}
    dest_id = {"name": "dest_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    missing = {"404": _error("Missing or another user's destination."), **ERRORS}
    return {
        "/destinations": {
            "get": _op("Your destinations (URLs masked)", {"200": _json(
                {"type": "array", "items": dest}, "Oldest first."), **ERRORS}),
            "post": _op("Add a destination", {
                "201": _json(dest, "Added; a generated secret is shown this once."),
                "422": _error("Invalid input per field, a private address, or 20 already."),
                **ERRORS}, requestBody={"required": True, "content": {
                    "application/json": {"schema": create}}})},
        "/destinations/{dest_id}": {
            "patch": _op("Rename, switch on or off, choose types or escalation", {
                "200": _json(dest, "Changed."), "422": _error("Invalid input; nothing changed."),
                **missing}, parameters=[dest_id], requestBody={"required": True, "content": {
                    "application/json": {"schema": patch}}}),
            "delete": _op("Delete a destination", {"204": {"description": "Deleted."},
                                                   **missing}, parameters=[dest_id])},
        "/destinations/{dest_id}/test": {"post": _op("Send a test message now", {
            "200": _json({"type": "object", "properties": {
                "ok": {"type": "boolean"}, "detail": s, "destination": dest}},
                "The outcome: ok, and what the receiver said or why it failed."),
            "429": _error("Over DESTINATION_TESTS_PER_MINUTE (10); see Retry-After."),
            **missing}, parameters=[dest_id])},
    }


ALERT_TYPES = ["above", "below", "volume_above", "crossing_up", "crossing_down", "crossing",
               "pct_up", "pct_down", "channel_exit", "channel_enter"]
ALERT_WINDOWS = ["1m", "5m", "15m", "1h", "4h", "24h"]


def _alert_fields():
    s, n = {"type": "string"}, {"type": "number"}
    return {
        "symbol": {**s, "description": (
            "A Binance spot symbol with status TRADING, e.g. BTCUSDT; while Binance's list "
            "is not at hand, any well-formed symbol is accepted as unverified.")},
        "type": {"enum": ALERT_TYPES, "description": (
            "above / below: a trade at or above / at or below price; volume_above: the 24 h "
            "base volume at or above it; crossing_up / crossing_down / crossing: the price "
            "crosses price upward / downward / either way; pct_up / pct_down: the price "
            "moves up / down by pct percent within the window; channel_exit / "
            "channel_enter: the price leaves / enters the range low..high.")},
        "price": {**n, "description": "the level (a volume for volume_above); alias target"},
        "pct": {**n, "exclusiveMinimum": 0, "maximum": 1000,
                "description": "pct_*: the move, in percent (pct_down: below 100)"},
        "window": {"enum": ALERT_WINDOWS, "description": "pct_*: the window the move is over"},
        "low": {**n, "description": "channel_*: the lower bound"},
        "high": {**n, "description": "channel_*: the upper bound, above low"},
        "mode": {"enum": ["once", "recurring"], "description": (
            "once (default): fires one time, then inactive; recurring: fires again after "
            "the price moves back past the level by the buffer.")},
        "buffer": {"type": ["number", "string"], "description": (
            "Re-arm distance for recurring alerts: an amount in the quote currency "
            "(default 0.5) or a percentage of the level such as \"0.1%\"; smaller than "
            "the level. pct_*: percentage points of the move (0.5 or \"0.5%\"), below pct. "
            "channel_*: accepted, does not apply.")},
        "cooldown_s": {"type": "integer", "minimum": 0, "maximum": 30 * 86400, "description": (
            "a recurring alert fires at most once per this many seconds (default 0)")},
        "expires_at": _nullable("string"), "note": {**s, "maxLength": 200},
        "message": {**s, "maxLength": 500, "description": (
            "the text of the alert's notifications by email, SMS, push and destinations (the "
            "inbox keeps the standard text); a template with {{ symbol }}, {{ price }}, "
            "{{ target }}, {{ condition }}, {{ time }}, {{ note }}, {{ pct }}, {{ window }}. "
            "One that does not parse or render is refused (422).")},
        "channels": {"type": ["array", "null"], "maxItems": 10, "items": {
            "type": ["string", "integer"]}, "description": (
            "where the notifications go: null (default) as the preferences say; else only "
            "these: \"email\", \"sms\", \"push\", your destinations' ids or names (stored "
            "as ids); [] the inbox and live feed only")},
    }


def _schemas():
    s, n, i = {"type": "string"}, {"type": "number"}, {"type": "integer"}
    return {
        "Error": {"type": "object", "required": ["error"], "properties": {
            "error": s, "detail": {}}},
        "Notification": {"type": "object", "required": [
            "id", "type", "title", "message", "priority", "status", "timestamp"], "properties": {
            "id": s, "alert_id": _nullable("integer"), "symbol": _nullable("string"),
            "alert_type": _nullable("string"), "trigger_price": _nullable("number"),
            "current_price": _nullable("number"),
            "timestamp": {"type": "string", "format": "date-time"},
            "status": {"enum": ["unread", "read"]}, "type": {"enum": sorted(TYPES)},
            "title": s, "message": s, "priority": {"enum": list(PRIORITIES)},
            "created_at": {**i, "description": "ms since the epoch"},
            "strategy_id": _nullable("string"), "order_id": _nullable("string"),
            "data": {"type": "object"}, "insist": {**_nullable("object"), "description": (
                "GET /notifications/{nid} only: null, or for one that insists "
                "{rounds, max_rounds, next_at, ended, acknowledged_at, acknowledged_by}; ended "
                "is null while it insists, else acknowledged, exhausted, expired, deleted or "
                "switched_off (its type no longer insists for you)")}}},
        "Acknowledgement": {"type": "object", "properties": {
            "id": s, "acknowledged_at": {"type": "string", "format": "date-time"},
            "acknowledged_by": s, "rounds": {**i, "description": "reminders sent before it"}}},
        "AlertCreate": {"type": "object", "required": ["symbol", "type"],
                        "properties": _alert_fields(), "oneOf": [
            {"properties": {"type": {"enum": ALERT_TYPES[:6]}}, "required": ["price"]},
            {"properties": {"type": {"enum": ["pct_up", "pct_down"]}},
             "required": ["pct", "window"]},
            {"properties": {"type": {"enum": ["channel_exit", "channel_enter"]}},
             "required": ["low", "high"]}], "description": (
            "Each type takes its own fields: price (above, below, volume_above, crossing_*), "
            "pct and window (pct_*), low and high (channel_*); another type's field is "
            "refused (422).")},
        "AlertPatch": {"type": "object", "properties": _alert_fields(), "description": (
            "Any of the fields, checked with the alert's others as a new alert is; a new "
            "type keeps the level fields it also takes. Other fields are refused (422).")},
        "Alert": {"type": "object", "properties": {
            "id": i, "symbol": s, "type": {"enum": ALERT_TYPES}, "price": n, "pct": n,
            "window": {"enum": ALERT_WINDOWS}, "low": n, "high": n, "mode": s,
            "buffer": {"type": ["number", "string"]}, "cooldown_s": i,
            "expires_at": _nullable("string"), "note": s, "message": s,
            "channels": {"type": ["array", "null"], "items": {"type": ["string", "integer"]}},
            "active": {"type": "boolean"}, "created_at": s,
            "status": {"enum": ["active", "paused", "expired", "fired", "unknown_symbol"],
                       "description": (
                           "fired: a one-shot alert that went off; unknown_symbol: Binance does "
                           "not trade the symbol (delisted, or accepted while unverified), so "
                           "the alert cannot fire.")},
            "symbol_check": {"enum": ["listed", "unlisted", "unverified"], "description": (
                "the symbol against Binance's list of trading symbols (refreshed daily); "
                "unverified until that list is at hand.")},
            "last_fired_at": _nullable("string"), "last_fired_price": _nullable("number"),
            "last_price": {**_nullable("number"), "description": (
                "the symbol's last trade (its 24 h volume for volume_above); null before the "
                "first one")},
            "last_price_at": {**_nullable("string"), "format": "date-time"},
            "distance_pct": {**_nullable("number"), "description": (
                "how far the alert is from firing, signed (README, Alerts): the level minus "
                "the last price as a percentage of it (a channel's nearer bound; volume for "
                "volume_above); for pct_up and pct_down, pct minus the move so far over the "
                "window. null without a price or a window.")}}},
        "Event": {"type": "object", "required": ["type", "title"], "properties": {
            "type": {"enum": sorted(TYPES)}, "title": s, "message": s,
            "priority": {"enum": list(PRIORITIES)}, "user_id": {"type": ["integer", "string"]},
            "strategy_id": s, "target": s, "channel": s, "data": {"type": "object"},
            "order_id": s, "alert_id": s}},
        "Health": {"type": "object", "required": ["redis", "monitoring", "circuit", "uptime_s",
                                                  "version"], "properties": {
            "status": {"enum": ["ok", "degraded"]}, "redis": {"enum": ["ok", "down"]},
            "monitoring": _nullable("object"), "circuit": _nullable("object"),
            "uptime_s": i, "version": s, "queues": _nullable("object"),
            "last_tick": _nullable("string"), "streams": {**_nullable("integer"), "description": (
                "live streams (SSE and WebSocket) this web process holds; the listener's "
                "market streams are monitoring.streams")},
            "processes": {**_nullable("object"), "description": (
                "per role (web, worker, listener, scheduler): alive count, restarts counted "
                "by the supervisor, and each process's host, pid, heartbeat age and uptime")},
            "missing": {"type": "array", "items": s, "description": (
                "required roles with no live process (worker, listener, scheduler)")}}},
    }


def document():
    """The whole API, as a dict ready for jsonify."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tickerbell API", "version": VERSION},
        "servers": [{"url": "/api/v1"}],
        "paths": {**_notification_paths(), **_alert_paths(), **_other_paths(),
                  **_hook_paths(), **_destination_paths(), **_preference_paths()},
        "components": {"schemas": _schemas(), "securitySchemes": {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "bearer": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": "session"},
            "serviceToken": {"type": "http", "scheme": "bearer",
                             "description": "A service token, for POST /events only."}}},
    }
