"""`flask redis-migrate`: a single Redis seeded in the layout before hash tags, migrated."""

import pytest

from webapp import keys
from webapp.core import keymigration
from webapp.inbox import service as inbox
from worker import slowpath


def _old_inbox(r, uid, titles):
    """A user's inbox as the old layout held it: written now, then renamed to the old names."""
    for title in titles:
        inbox.store({"user_id": uid, "type": "PRICE_ALERT", "title": title})
    nid = inbox.list_page(uid)[0][0]["id"]
    inbox.mark_read(uid, nid)
    for new, old in ((keys.replay(uid), f"tb:replay:{uid}"), (keys.read(uid), f"tb:read:{uid}")):
        r.rename(new, old)
    return nid


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield


def test_a_users_inbox_and_read_state_move_to_the_tagged_names(r, ctx):
    read_nid = _old_inbox(r, 42, ["one", "two"])
    assert inbox.list_page(42)[0] == []  # the old keys are invisible to the new code

    counts = keymigration.migrate(r)

    page = inbox.list_page(42)[0]
    assert [n["title"] for n in page] == ["two", "one"]
    assert {n["id"]: n["status"] for n in page}[read_nid] == "read"
    assert inbox.unread_count(42) == 1
    assert r.ttl(keys.replay(42)) > 0  # its 7-day clock came with it
    assert not r.exists("tb:replay:42", "tb:read:42")
    assert counts["moved"] == 2


def test_a_users_keys_written_since_the_upgrade_win(r, ctx):
    _old_inbox(r, 7, ["old"])
    inbox.store({"user_id": 7, "type": "PRICE_ALERT", "title": "new"})

    counts = keymigration.migrate(r)

    assert [n["title"] for n in inbox.list_page(7)[0]] == ["new"]
    assert r.exists("tb:replay:7")  # left to expire on its own clock
    assert counts["kept"] == 1


def test_prices_move_and_the_price_history_merges(r, ctx):
    r.hset("tb:price:BTCUSDT", mapping={"price": "100", "ts": "1"})
    r.rpush("tb:spark:BTCUSDT", "[1, 100]")
    r.zadd("tb:pricehist:BTCUSDT", {"1000:90": 1000})
    r.zadd(keys.price_history("BTCUSDT"), {"2000:95": 2000})
    r.hset("tb:price:ETHUSDT", mapping={"price": "1", "ts": "1"})
    r.hset(keys.price("ETHUSDT"), mapping={"price": "2", "ts": "2"})

    keymigration.migrate(r)

    assert r.hget(keys.price("BTCUSDT"), "price") == "100"
    assert r.lrange(keys.spark("BTCUSDT"), 0, -1) == ["[1, 100]"]
    assert r.zrange(keys.price_history("BTCUSDT"), 0, -1) == ["1000:90", "2000:95"]
    assert r.hget(keys.price("ETHUSDT"), "price") == "2"  # the newer price stays
    assert not r.exists("tb:price:BTCUSDT", "tb:spark:BTCUSDT", "tb:pricehist:BTCUSDT",
                        "tb:price:ETHUSDT")


def test_the_old_alert_index_goes_and_the_new_one_stays(r, ctx):
    old = ["tb:idx:BTCUSDT:above", "tb:rearm:BTCUSDT:below", "tb:inuse:BTCUSDT",
           "tb:win:BTCUSDT:60:min", "tb:alerts", "tb:alerts:fired", "tb:alerts:version"]
    for name in old:
        r.set(name, "x")
    new = [keys.index("BTCUSDT", "above"), keys.alerts("BTCUSDT"), keys.kinds_in_use("BTCUSDT"),
           keys.window("BTCUSDT", 60, "min"), keys.ALERT_SYMBOLS, keys.SYMBOLS]
    for name in new:
        r.set(name, "y")

    keymigration.migrate(r)

    assert r.exists(*old) == 0
    assert r.exists(*new) == len(new)


def test_the_symbol_list_moves_to_its_tag(r, ctx):
    r.zadd("tb:binance:symbols", {"BTCUSDT": 0})
    r.hset("tb:binance:symbols:meta", "count", 1)

    keymigration.migrate(r)

    assert r.zrange(keys.BINANCE_SYMBOLS, 0, -1) == ["BTCUSDT"]
    assert r.hget(keys.BINANCE_SYMBOLS_META, "count") == "1"
    assert not r.exists("tb:binance:symbols", "tb:binance:symbols:meta")


def test_the_old_slow_path_stream_is_renamed_with_its_group(r, ctx):
    r.xgroup_create("tb:fired", slowpath.GROUP, id="0", mkstream=True)
    r.xadd("tb:fired", {"items": "a"})
    r.xreadgroup(slowpath.GROUP, "gone", {"tb:fired": ">"})  # pending with a dead consumer

    keymigration.migrate(r)

    assert not r.exists("tb:fired")
    assert r.xpending(keys.FIRED, slowpath.GROUP)["pending"] == 1


def test_the_old_slow_path_stream_is_drained_into_an_existing_one(r, ctx):
    slowpath.ensure_group(r)
    r.xadd(keys.FIRED, {"items": "new"})
    for n in range(3):
        r.xadd("tb:fired", {"items": f"old{n}"})

    counts = keymigration.migrate(r)

    assert [f["items"] for _, f in r.xrange(keys.FIRED)] == ["new", "old0", "old1", "old2"]
    assert not r.exists("tb:fired")
    assert counts["entries"] == 3
    reply = r.xreadgroup(slowpath.GROUP, "c", {keys.FIRED: ">"})  # the group sees them all
    assert len(reply[0][1]) == 4


def test_a_second_run_finds_nothing_to_do(r, ctx):
    _old_inbox(r, 1, ["x"])
    r.set("tb:idx:ETHUSDT:below", "x")
    r.xadd("tb:fired", {"items": "a"})
    keymigration.migrate(r)
    before = {name: r.type(name) for name in r.scan_iter()}

    assert keymigration.migrate(r) == {"moved": 0, "kept": 0, "dropped": 0, "entries": 0}
    assert {name: r.type(name) for name in r.scan_iter()} == before


def test_the_command_reports_what_it_did(r, app, runner):
    r.hset("tb:price:BTCUSDT", "price", "1")
    r.set("tb:idx:BTCUSDT:above", "x")

    result = runner.invoke(args=["redis-migrate"])

    assert result.exit_code == 0, result.output
    assert "1 moved, 0 kept, 1 dropped, 0 entries" in result.output
