"""Accounts: sign-up and sign-in (views.py), server-side sessions, API keys, password and
key settings (settings.py), login throttling, the security notices the app raises itself,
and `flask users` / `flask apikeys` (cli.py)."""
