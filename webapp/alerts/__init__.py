"""Alerts of every kind: input checks (fields.py, one field at a time; validation.py, an
alert of a kind and a PATCH's merge; routing.py, the channels an alert names; messages.py,
its message template, checked when saved and rendered when it fires), CRUD (service.py),
their Redis index that the matcher reads (index.py, its Lua in scripts.py), where each
stands against the market (readings.py), the alerts page and its chart (views.py,
chart.py), the JSON API (api.py) and `flask alerts list` (cli.py). The matching itself
runs in the worker (worker/matcher.py, worker/match/)."""
