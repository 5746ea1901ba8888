"""What runs in the background: the Binance listener (listener/), tick matching
(matcher.py + match/), the slow path (slowpath.py), RQ workers (runner.py), housekeeping
jobs (jobs.py) and the schedule (schedule.py). Imports webapp, never the other way round."""
