"""The inbox: each user's notifications for 7 days in a Redis stream with their read state
(service.py, its Lua in scripts.py), the inbox page (views.py) and the notifications API
(api.py)."""
