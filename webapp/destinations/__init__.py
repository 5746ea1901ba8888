"""Destinations: a user's own delivery channels (Apprise URLs, signed webhooks).

    fields.py    one field's checks, the URL's masked form
    service.py   add, list, change, test, delete; the notice when one is switched off
    api.py       /api/v1/destinations on the API blueprint
    views.py     the settings page, /settings/destinations (HTMX swaps of one partial)

Sending them is a delivery channel's job: webapp/delivery/channels/destination.py.
"""
