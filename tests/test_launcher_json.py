"""`make run` under LOG_FORMAT=json: every line it prints is a JSON object a log shipper can
read, the launcher's own (the private Redis, a crash and its restart, the stop) included."""

import json
import os
import signal

from devtools.fakefeed import FakeFeed
from tests.product import Product, until


def test_every_line_is_json_the_launchers_own_and_a_crash_notice_included(tmp_path):
    with FakeFeed() as feed:
        product = Product(tmp_path, feed, env={"LOG_FORMAT": "json"})
        product.start()
        try:
            [worker] = product.pids("worker")
            os.kill(worker, signal.SIGKILL)
            assert until(lambda: product.pids("worker") - {worker}, 30), product.output()
        finally:
            assert product.stop() == 0, product.output()
    lines = (tmp_path / "launch.log").read_text().splitlines()
    # honcho's "HH:MM:SS name | " prefix, then the process's line
    entries = [json.loads(line.partition(" | ")[2]) for line in lines]
    launcher = [e["message"] for e in entries if e["logger"] == "launch"]
    assert any(m.startswith("private redis-server at") for m in launcher), launcher
    [exited] = [e for e in entries if e["message"].startswith("worker exited (signal SIGKILL)")]
    assert exited["logger"] == "launch" and exited["level"] == "WARNING"  # an operator's alert
    assert launcher[-2:] == ["stopping Tickerbell ...", "stopped"], launcher
    assert {e["process"] for e in entries} >= {"launch", "web", "worker", "listener",
                                                "scheduler"}
