"""Every alert kind live, against a reference: two listeners on one feed, and edits while
ticks flow. The same alerts are indexed in Redis db 1 and the same trades fed straight to a
Matcher there: the live path must give exactly its notifications."""

import math
import threading
from collections import Counter
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from sqlalchemy import select

from tests.test_alert_kinds_live import creating, fired, listening, subscribed
from webapp import keys
from webapp.alerts import index as alert_index
from webapp.extensions import db
from webapp.models import Alert
from worker.matcher import Matcher


@pytest.fixture
def listen(r, feed):
    yield from listening(r, feed)


@pytest.fixture
def user(auth):
    return auth.create()


@pytest.fixture
def create(client, auth, user):
    return creating(client, auth)


WALK = [round(100 + 2.6 * math.sin(i * 0.55) + 0.4 * math.sin(i * 2.3), 2) for i in range(90)]


def every_kind(create, mode_cooldowns=(("once", 0), ("recurring", 0), ("recurring", 5))):
    """Alerts of every kind near 100, where WALK goes back and forth."""
    for mode, cooldown_s in mode_cooldowns:
        common = {"mode": mode, "cooldown_s": cooldown_s}
        for level in (98.5, 100, 101.5):
            for kind in ("above", "below", "crossing_up", "crossing_down", "crossing"):
                create(type=kind, price=level, buffer=0.3, **common)
        for pct, window in ((1.5, "1m"), (3, "5m")):
            create(type="pct_up", pct=pct, window=window, buffer=0.5, **common)
            create(type="pct_down", pct=pct, window=window, buffer=0.5, **common)
        for low, high in ((99, 101), (97.5, 102)):
            create(type="channel_exit", low=low, high=high, **common)
            create(type="channel_enter", low=low, high=high, **common)
        create(type="volume_above", price=1000, buffer=100, **common)


def sql_alerts(app):
    with app.app_context():
        alerts = db.session.scalars(select(Alert)).all()
        db.session.expunge_all()
        return alerts


def walk(market, each=None):
    for n, price in enumerate(WALK):
        market.trade("BTCUSDT", price)
        if n % 10 == 0:
            market.volume("BTCUSDT", 900 + 150 * ((n // 10) % 3))  # 900, 1050, 1200
        if each:
            each()


def other_db(url, db):
    """The same server's database `db`: a unix:// url names it in the query, redis:// in the
    path (and a url's own db wins over a `db=` argument to from_url)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":  # urlunsplit would drop the empty host's "//"
        return f"unix://{parts.path}?db={db}"
    return urlunsplit(parts._replace(path=f"/{db}"))


def reference(app, redis_url, market):
    """What a single matcher makes of the same alerts and ticks, in Redis db 1."""
    ref = redis.Redis.from_url(other_db(redis_url, 1), decode_responses=True)
    assert ref.dbsize() == 0
    try:
        for alert in sql_alerts(app):
            alert_index.index(alert, ref)
        market.replay(Matcher(ref))
        users = {int(keys.tagged_id(k, keys.REPLAY_PREFIX)) for k in ref.scan_iter("tb:replay:*")}
        return Counter(pair for uid in users for pair in fired(ref, uid))
    finally:
        ref.close()


@pytest.mark.parametrize("lagging", [False, True], ids=["lockstep", "one_lagging"])
def test_two_listeners_give_each_notification_once(app, r, redis_url, feed, listen, create,
                                                   user, lagging):
    every_kind(create)
    market = listen(count=2)
    assert subscribed(feed, ["BTCUSDT"], listeners=2)
    second = market.handlers[1]
    if lagging:
        second.gate.clear()  # the market waits on the first listener only, meanwhile
    walk(market)
    second.gate.set()
    market.wait()
    live = Counter(fired(r, user))
    want = reference(app, redis_url, market)
    assert sum(want.values()) > 100 and max(want.values()) == 1
    assert live == want


def test_edits_while_ticks_flow_keep_every_alert_where_it_stands(app, r, redis_url, feed,
                                                                  listen, create, user):
    every_kind(create, mode_cooldowns=(("recurring", 0), ("recurring", 5)))
    alerts = sql_alerts(app)
    market = listen()
    assert subscribed(feed, ["BTCUSDT"])
    done, edits = threading.Event(), Counter()

    def edit():
        while not done.is_set():
            for alert in alerts:
                alert.note = f"edit {edits['all']}"  # what it watches stays: its phase too
                alert_index.index(alert, r)
                edits["all"] += 1

    editor = threading.Thread(target=edit, daemon=True)
    editor.start()
    try:
        ticks_seen = []
        walk(market, each=lambda: ticks_seen.append(edits["all"]))
    finally:
        done.set()
        editor.join(5)
    assert len(set(ticks_seen)) > len(WALK) // 2  # edits kept landing between the ticks
    live = Counter(fired(r, user))
    want = reference(app, redis_url, market)
    assert sum(want.values()) > 50 and max(live.values()) == 1
    assert live == want
