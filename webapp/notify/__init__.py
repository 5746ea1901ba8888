"""Notifications in: the type registry (types.py), events from internal systems with their
service tokens (intake.py, api.py, service_tokens.py), `flask notify` / `flask tokens`, and
the router that stores each notification and sends it on to the audit trail and deliveries
(router.py)."""
