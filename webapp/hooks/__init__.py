"""Inbound webhooks (TradingView's alerts, any bot): hook tokens and receiving (service.py),
reading a body (body.py), the receiver and the settings page (views.py, forms.py) and the
JSON API's /hooks (api.py)."""
