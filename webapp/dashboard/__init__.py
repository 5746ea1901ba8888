"""The dashboard: the latest notifications, watched prices, and the status banner."""
