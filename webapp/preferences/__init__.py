"""Delivery preferences: what goes where and when (service.py: toggles, quiet hours, limits,
strategy follows, push subscriptions) and the notification settings page (views.py)."""
