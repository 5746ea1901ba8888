"""How late a listener's ticks are matched: from a trade's own time to its match done."""

import time

WINDOW_S = 60


class Lag:
    """The worst lag (ms) of the current and the previous minute. The status is written every
    second and read every 10 s (the operations page): a backlog, an outage's included, stays
    in view that long, and a market gone quiet reads none after two minutes."""

    def __init__(self, window_s=WINDOW_S, clock=time.monotonic):
        self.window_s, self.clock = window_s, clock
        self.worst = self.before = None
        self.since = clock()

    def _roll(self):
        now = self.clock()
        if now - self.since >= self.window_s:
            # the window just ended is the one before, unless a whole one passed unseen
            self.before = self.worst if now - self.since < 2 * self.window_s else None
            self.worst, self.since = None, now

    def note(self, lag_ms):
        self._roll()
        self.worst = lag_ms if self.worst is None else max(self.worst, lag_ms)

    def worst_ms(self):
        self._roll()
        known = [lag for lag in (self.worst, self.before) if lag is not None]
        return max(known) if known else None


def status_field(lags):
    """The status hash's `lag_ms`: the worst of the connections', "" when none matched lately."""
    known = [lag for lag in lags if lag is not None]
    return {"lag_ms": max(known) if known else ""}
