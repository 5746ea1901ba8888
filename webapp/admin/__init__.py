"""Admin pages: broadcast a system notification to every user."""
