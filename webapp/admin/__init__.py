"""Admin pages: broadcast a system notification to every user; the operations page and
`flask status`."""
