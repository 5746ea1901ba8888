"""TradingView into a trader's webhook: how fast a hook answers (TradingView gives up after
3 s) and how long until the signed POST reaches the trader's receiver, on the product as
`make run` runs it (web, worker, scheduler, listener, a private Redis). Beside them, the
floor: the same receiver's own round trip for a bare POST from here.

    python bench/hooks.py [--posts 200]
"""

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.fakefeed import FakeFeed  # noqa: E402
from tests.hub import HttpRecorder  # noqa: E402
from tests.product import Product, until  # noqa: E402
from webapp.accounts import service as accounts  # noqa: E402
from webapp.extensions import db  # noqa: E402
from webapp.models import User  # noqa: E402


def percentiles(values):
    ordered = sorted(values)
    return {"p50": statistics.median(ordered), "p99": ordered[int(len(ordered) * 0.99) - 1],
            "max": ordered[-1]}


def row(name, figures):
    print(f"{name:<44} p50 {figures['p50']:8.2f}  p99 {figures['p99']:8.2f}  "
          f"max {figures['max']:8.2f} ms")


def setup(product, receiver):
    """An API key, a webhook destination at the receiver, a hook; returns the hook's URL."""
    with product.app.app_context():
        _, key = accounts.create_api_key(db.session.get(User, product.uid), "bench")
    api = requests.Session()
    api.headers["X-API-Key"] = key
    base = product.base + "/api/v1"
    api.patch(base + "/preferences", json={"max_per_minute": 1000}).raise_for_status()
    api.post(base + "/destinations", json={"kind": "webhook", "name": "bot",
                                           "url": receiver.url + "/in"}).raise_for_status()
    made = api.post(base + "/hooks", json={"name": "TradingView"})
    made.raise_for_status()
    return made.json()["url"]


def measure(url, receiver, posts):
    """(answer ms, POST -> receiver ms) for each post, one at a time."""
    answers, arrivals, session = [], [], requests.Session()
    for i in range(posts):
        body = json.dumps({"title": f"bench {i}", "message": "BTCUSDT crossed 65000",
                           "symbol": "BTCUSDT", "price": 65000 + i})
        had = len(receiver.requests)
        start = time.perf_counter()
        answer = session.post(url, data=body, headers={"Content-Type": "application/json"})
        answers.append((time.perf_counter() - start) * 1000)
        assert answer.status_code == 202, answer.text
        assert until(lambda had=had: len(receiver.requests) > had, 30, every=0.0005)
        arrivals.append((time.perf_counter() - start) * 1000)
    return answers, arrivals


def floor(receiver, posts):
    session, took = requests.Session(), []
    for _ in range(posts):
        start = time.perf_counter()
        session.post(receiver.url + "/floor", data=b"{}").raise_for_status()
        took.append((time.perf_counter() - start) * 1000)
    return took


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=200)
    posts = parser.parse_args().posts
    receiver = HttpRecorder(status=200)
    threading.Thread(target=receiver.serve_forever, args=(0.01,), daemon=True).start()
    with TemporaryDirectory() as tmp, FakeFeed() as feed:
        product = Product(Path(tmp), feed, env={"DESTINATIONS_ALLOW_PRIVATE": "1",
                                                "HOOK_RATE_PER_MINUTE": "100000"})
        product.start()
        try:
            url = setup(product, receiver)
            answers, arrivals = measure(url, receiver, posts)
        finally:
            product.stop()
    print(f"{posts} TradingView posts, one at a time")
    row("hook answers 202 (TradingView waits 3 s)", percentiles(answers))
    row("POST -> signed webhook at the receiver", percentiles(arrivals))
    row("floor: a bare POST to the receiver", percentiles(floor(receiver, posts)))
    receiver.shutdown()


if __name__ == "__main__":
    main()
