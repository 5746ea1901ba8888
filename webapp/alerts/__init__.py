"""Price and volume alerts: validation and CRUD (service.py), their Redis index that the
matcher reads (index.py), the alerts page (views.py), the JSON API (api.py) and
`flask alerts list` (cli.py). The matching itself runs in the worker (worker/matcher.py)."""
