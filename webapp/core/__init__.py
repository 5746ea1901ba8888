"""Plumbing every feature shares: the SQL engine, RQ queues, riding out Redis outages,
circuit breakers, process heartbeats, the health report, and how operator commands are
wired."""
