"""The JSON API at /api/v1: the blueprint with its auth and errors (blueprint.py), the
OpenAPI document and the health report. Each feature adds its own routes (alerts/api.py,
inbox/api.py, notify/api.py, delivery/api.py)."""
