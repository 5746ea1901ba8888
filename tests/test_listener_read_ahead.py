"""The listener's fast path under a burst: frames read from memory (ReadAhead), the matcher's
calls packed by us (PackedCalls), and the next frames read while Redis matches a round. Each
must leave every tick matched once, in its stream's order, and the Redis connection in step
with its replies whatever fails."""

import json
import socket
import threading
import time

import pytest
import redis

from tests.test_listener import eventually
from tests.test_listener_redis import OwnRedis
from tests.test_tick_batches import T0, arm, batch, fired
from webapp import keys
from webapp.exceptions import TicksNotMatched
from worker import packed
from worker.listener.connection import MAX_BATCH, Listener
from worker.listener.pacing import Backoff
from worker.listener.readahead import ReadAhead
from worker.matcher import Matcher
from worker.packed import PackedCalls


# -- ReadAhead -------------------------------------------------------------------------
@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    yield ReadAhead(ours), theirs
    ours.close()
    theirs.close()


def test_read_ahead_hands_out_exactly_the_parts_asked_for_from_one_read(pair):
    sock, peer = pair
    peer.sendall(b"ab" + b"cd" + b"x" * 300 + b"ef")
    assert sock.recv(2) == b"ab"
    assert sock.pending() == 2 + 300 + 2  # read at once: the rest waits in memory
    assert (sock.recv(2), sock.recv(300), sock.recv(2)) == (b"cd", b"x" * 300, b"ef")
    assert sock.pending() == 0


def test_read_ahead_gives_what_it_holds_before_reading_again_and_b_empty_at_the_end(pair):
    sock, peer = pair
    peer.sendall(b"12345")
    assert sock.recv(3) == b"123"
    assert sock.recv(10) == b"45"  # a short read, as a socket's: the caller asks again
    peer.sendall(b"6789")
    assert sock.recv(10) == b"6789"
    peer.shutdown(socket.SHUT_WR)
    assert sock.recv(2) == b""


def test_read_ahead_passes_a_large_frame_through_whole_and_everything_else_to_the_socket(
        pair):
    sock, peer = pair
    big = bytes(range(256)) * 1024  # 256 KiB: more than one read ahead
    threading.Thread(target=peer.sendall, args=(big,), daemon=True).start()
    got = b""
    while len(got) < len(big):
        got += sock.recv(len(big) - len(got))
    assert got == big
    sock.settimeout(0.05)
    assert sock.gettimeout() == 0.05 and sock.fileno() > 0
    with pytest.raises(TimeoutError):
        sock.recv(1)


# -- PackedCalls ---------------------------------------------------------------------
def test_a_call_failing_mid_round_fails_alone_and_the_connection_stays_in_step(r):
    up = arm(r, "AAAUSDT", "above", 100)
    r.set(keys.price("BBBUSDT"), "not a hash")  # its call fails with WRONGTYPE
    matcher = Matcher(r)
    with pytest.raises(TicksNotMatched):
        matcher.on_ticks(batch(("AAAUSDT", 101), ("BBBUSDT", 5), ("CCCUSDT", 7)))
    assert fired(r) == [(up, 101)]  # the call before it ran; the round's replies all read
    assert r.get(keys.price("BBBUSDT")) == "not a hash"  # this reply is this command's
    assert r.hget(keys.price("CCCUSDT"), "price") == "7"
    r.delete(keys.price("BBBUSDT"))
    assert matcher.on_ticks(batch(("AAAUSDT", 98), ("BBBUSDT", 5))) == []
    assert r.hget(keys.price("BBBUSDT"), "price") == "5"


def test_work_that_fails_while_redis_answers_cuts_the_connection_not_the_next_reply(r):
    """Were the connection pooled with the round's replies unread, the next command
    would read one of them as its own."""
    arm(r, "AAAUSDT", "above", 100)
    matcher = Matcher(r)

    def broken():
        raise RuntimeError("the websocket went away")

    with pytest.raises(RuntimeError), packed.meanwhile(broken):
        matcher.on_ticks(batch(("AAAUSDT", 99), *[(f"S{i:02d}USDT", 5) for i in range(50)]))
    for i in range(20):
        assert r.set(f"k{i}", i) is True and r.get(f"k{i}") == str(i)
    assert packed._thread.work is None  # the block ended: the next round does no work


def test_packed_calls_carry_each_key_and_argument_as_given_utf_8_included(r):
    sha = r.script_load("return {KEYS, ARGV}")
    calls = PackedCalls(r, sha, ["tb:replay:{", "tail é"])
    level = ["tb:price:{ÄBCUSDT}", "tb:idx:{ÄBCUSDT}:above"]
    first = ["ÄBCUSDT", "price", "101.5", T0, 2000, 7, 0]
    second = ["ÄBCUSDT", "price", "0.00012", T0 + 1, 2000, 8, 2]
    other = ["XYZUSDT", "volume", "1e+20", T0, 5, 0, 1]
    replies = calls.execute([(level, first), (level, second), (level[:1], other)])
    tail = ["tb:replay:{", "tail é"]
    assert replies == [[level, [*map(str, first), *tail]], [level, [*map(str, second), *tail]],
                       [level[:1], [*map(str, other), *tail]]]


# -- reading ahead in the listener ---------------------------------------------------
def test_frames_read_while_redis_matches_fire_in_order_and_an_end_read_ahead_waits_for_them(
        r, feed):
    """More than a round's ticks and then a close arrive together: the first round goes to
    Redis, the rest are read meanwhile, matched next, and only then is the close obeyed."""
    others = [f"S{i:03d}USDT" for i in range(MAX_BATCH + 40)]
    alerts = {symbol: arm(r, symbol, "above", 100, mode="once") for symbol in others}
    up = arm(r, "AAAUSDT", "above", 100)  # recurring: fires, re-arms below 99, fires again
    matcher = Matcher(r)
    ahead, on_ticks = [], matcher.on_ticks

    def spy(ticks):
        result = on_ticks(ticks)
        ahead.append(len(listener._ticks))  # read while this round was in Redis
        return result

    matcher.on_ticks = spy
    listener = Listener(r, matcher, feed.url, poll_s=0.02, heartbeat_s=0.05,
                        recv_timeout_s=0.02, backoff=Backoff(0.01, 0.1))
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    try:
        assert eventually(lambda: all(f"{s.lower()}@aggTrade" in feed.subscriptions()
                                      for s in [*others, "AAAUSDT"]), timeout=10)
        burst = [*[(s, 101) for s in others[:MAX_BATCH]], ("AAAUSDT", 98),
                 *[(s, 101) for s in others[MAX_BATCH:]], ("AAAUSDT", 102)]
        before = feed.connection_count
        # the first tick's round waits in Redis while the rest and the close arrive: the
        # next round is a full one, and what is behind it is there to read ahead
        r.client_pause(300, all=False)
        assert feed.trade("AAAUSDT", 101)
        time.sleep(0.1)
        assert feed.trades(burst)
        feed.drop_all(code=1000)
        assert eventually(lambda: len(fired(r)) == len(others) + 2, timeout=10)
        notes = fired(r)
        assert sorted(a for a, _ in notes if a != up) == sorted(alerts.values())
        assert [p for a, p in notes if a == up] == [101, 102]
        assert eventually(lambda: feed.connection_count == before, timeout=10)
        assert max(ahead) > 0  # some were read ahead
    finally:
        listener.stop.set()
        thread.join(5)
    assert len(fired(r)) == len(others) + 2  # and nothing twice after the reconnect


def test_a_redis_that_drops_mid_round_loses_no_tick_read_ahead(r, feed, redis_url):
    """The round fails (TicksNotMatched): its ticks and those read meanwhile are held, in
    order, and fire once when Redis answers again."""
    others = [f"S{i:03d}USDT" for i in range(MAX_BATCH + 20)]
    alerts = {symbol: arm(r, symbol, "above", 100, mode="once") for symbol in others}
    matcher = Matcher(r)
    listener = Listener(r, matcher, feed.url, poll_s=0.02, heartbeat_s=0.05,
                        recv_timeout_s=0.02, backoff=Backoff(0.01, 0.1), redis_retry_s=0.05)
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    killer = redis.Redis.from_url(redis_url)
    try:
        assert eventually(lambda: all(f"{s.lower()}@aggTrade" in feed.subscriptions()
                                      for s in others), timeout=10)
        killer.client_pause(500, all=False)  # the round's scripts wait; its link is cut
        assert feed.trades([(s, 101) for s in others])
        assert eventually(lambda: killer.client_kill_filter(_type="normal",
                                                            skipme=True) > 0, timeout=5)
        assert eventually(lambda: len(fired(r)) == len(others), timeout=15)
        assert sorted(a for a, _ in fired(r)) == sorted(alerts.values())
    finally:
        listener.stop.set()
        thread.join(5)
        killer.close()


# -- whole trades taken from memory --------------------------------------------------
def frame(first_byte, payload):
    """A server's frame (unmasked) with a 7- or 16-bit length."""
    size = len(payload)
    head = bytes([first_byte, size]) if size < 126 else bytes([first_byte, 126, *size.to_bytes(
        2, "big")])
    return head + payload


def test_whole_text_frames_are_taken_and_anything_else_is_left_for_websocket_client(pair):
    sock, peer = pair
    small, large = b'{"a":1}', b'{"b":"' + b"x" * 300 + b'"}'
    cut = frame(0x81, b'{"c":3}')
    peer.sendall(frame(0x81, small) + frame(0x81, large) + frame(0x89, b"ping")
                 + frame(0x01, b"frag") + cut[:5])
    assert sock.text_frame() is None  # nothing read yet: only the socket's reads fill it
    assert sock.recv(1) == b"\x81" and sock.recv(1) == bytes([len(small)])
    assert sock.recv(len(small)) == small  # the same bytes, through websocket-client's reads
    assert sock.text_frame() == large  # the next whole frame, taken at once
    assert sock.text_frame() is None  # a ping: websocket-client answers it
    assert sock.recv(2 + 4) == frame(0x89, b"ping")
    assert sock.text_frame() is None  # a fragment
    assert sock.recv(2 + 4) == frame(0x01, b"frag")
    assert sock.text_frame() is None  # a frame not all here yet: nothing taken
    assert sock.pending() == 5
    peer.sendall(cut[5:])
    assert sock.recv(len(cut)) == cut[:5] and sock.recv(len(cut)) == cut[5:]
    masked = bytes([0x81, 0x80 | 2, 1, 2, 3, 4]) + b"ab"
    huge = bytes([0x81, 127, *(70000).to_bytes(8, "big")])
    for raw in (masked, huge):
        peer.sendall(raw)
        assert sock.text_frame() is None and sock.recv(len(raw)) == raw


def trade_frame(symbol, price, trade_id, extra=""):
    data = {"e": "aggTrade", "E": T0, "s": symbol, "a": trade_id, "p": str(price), "q": "1",
            "T": T0 + trade_id, "m": False, "M": True, "x": extra}
    return json.dumps({"stream": f"{symbol.lower()}@aggTrade", "data": data},
                      ensure_ascii=False).encode()


@pytest.fixture
def listening(r, feed):
    listener = Listener(r, Matcher(r), feed.url, poll_s=0.02, heartbeat_s=0.05,
                        recv_timeout_s=0.02, backoff=Backoff(0.01, 0.1))
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    yield listener
    listener.stop.set()
    thread.join(5)


def test_a_fragmented_trade_with_a_ping_amid_it_then_whole_trades_each_fire_once(
        r, feed, listening):
    up, down = arm(r, "AAAUSDT", "above", 100), arm(r, "BBBUSDT", "below", 50)
    assert feed.wait_for_subscription("aaausdt@aggTrade")
    assert feed.wait_for_subscription("bbbusdt@aggTrade")
    first = trade_frame("AAAUSDT", 101, 9001)
    feed.send_frames(frame(0x01, first[:40]) + frame(0x89, b"are you there")
                     + frame(0x80, first[40:]) + frame(0x81, trade_frame("BBBUSDT", 49, 9002))
                     + frame(0x81, trade_frame("AAAUSDT", 98, 9003))
                     + frame(0x81, trade_frame("AAAUSDT", 102, 9004)))
    assert eventually(lambda: len(fired(r)) == 3, timeout=5)
    assert fired(r) == [(up, 101), (down, 49), (up, 102)]


def test_a_trade_cut_in_two_is_finished_as_one_frame_not_misread_from_memory(
        r, feed, listening):
    """The network cuts a frame in two and the listener's read times out between them; the
    rest begins with a byte that would open a whole text frame (0x81, within 'ā' in UTF-8),
    and is read as the payload's rest all the same."""
    up = arm(r, "AAAUSDT", "above", 100)
    assert feed.wait_for_subscription("aaausdt@aggTrade")
    whole = frame(0x81, trade_frame("AAAUSDT", 101, 9001, extra="ā" * 40))
    cut = whole.index("ā".encode()) + 1
    assert whole[cut] == 0x81
    feed.send_frames(whole[:cut])
    time.sleep(0.2)  # several of the listener's read timeouts
    feed.send_frames(whole[cut:] + frame(0x81, trade_frame("AAAUSDT", 98, 9002))
                     + frame(0x81, trade_frame("AAAUSDT", 103, 9003)))
    assert eventually(lambda: len(fired(r)) == 2, timeout=5)
    assert fired(r) == [(up, 101), (up, 103)]
    assert feed.connection_count == 1  # the same connection: nothing misread


def test_a_burst_over_many_symbols_through_a_redis_kill_and_a_dropped_market_fires_each_once(
        tmp_path, feed):
    """Ten groups of ten symbols, each group's burst 300 trades climbing through its five
    one-shot alerts (rounds big enough to read ahead; a group's top comes last, so a burst
    lost in part leaves alerts unfired). Redis is killed while a round waits in it (paused),
    frames of the burst behind it, and started again from its append-only file; then the
    market connection drops. Every alert fires, none twice."""
    server = OwnRedis(tmp_path / "redis")
    r = server.client(timeout_s=2)
    symbols = [f"D{i:03d}USDT" for i in range(100)]
    alerts = {arm(r, s, "above", 100 + t, mode="once") for s in symbols for t in range(1, 6)}
    matcher = Matcher(server.client())
    listener = Listener(server.client(), matcher, feed.url, poll_s=0.02, heartbeat_s=0.05,
                        recv_timeout_s=0.02, backoff=Backoff(0.01, 0.1), redis_retry_s=0.05)
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    bursts = [[(s, round(100.5 + rep * 5 / 29, 4)) for rep in range(30)
               for s in symbols[group * 10:group * 10 + 10]] for group in range(10)]
    try:
        assert eventually(lambda: all(f"{s.lower()}@aggTrade" in feed.subscriptions()
                                      for s in symbols), timeout=10)
        for burst in bursts[:3]:
            assert feed.trades(burst)
        assert eventually(lambda: len(fired(r)) == 150, timeout=10)
        # a round waits in Redis while more of its burst comes: then Redis dies
        r.client_pause(5000, all=False)
        assert feed.trades(bursts[3])
        time.sleep(0.3)
        server.kill()
        assert feed.trades(bursts[4])  # read while Redis is away: held
        time.sleep(0.2)
        server.restart()
        for burst in bursts[5:7]:
            assert feed.trades(burst)
        # every trade sent so far read and fired before the drop: a drop meeting a paced
        # UNSUBSCRIBE (BrokenPipeError) ends the connection with the rest still unread
        r = server.client(timeout_s=2)
        assert eventually(lambda: len(fired(r)) >= 350, timeout=20)
        dropped = listener.status.get("connected_at")
        feed.drop_all()
        # a new connection; a symbol whose alerts have all fired is let go, the rest return
        assert eventually(lambda: listener.status.get("connected_at") != dropped and all(
            f"{s.lower()}@aggTrade" in feed.subscriptions() for s in symbols[70:]), timeout=10)
        for burst in bursts[7:]:
            assert feed.trades(burst)
        assert eventually(lambda: len(fired(r)) >= len(alerts), timeout=20)
        time.sleep(0.3)  # nothing more comes
        assert sorted(a for a, _ in fired(r)) == sorted(alerts)  # each once
    finally:
        listener.stop.set()
        thread.join(5)
        matcher.close()
        server.close()


def test_ticks_read_ahead_when_the_listener_stops_are_matched_before_it_ends(
        r, feed, monkeypatch):
    """(What is still on the socket when it stops is never read: Binance replays nothing,
    and the next listener starts from the market's next trades.)"""
    monkeypatch.setattr("worker.listener.connection.MAX_BATCH", 5)
    others = [f"S{i:03d}USDT" for i in range(10)]
    alerts = {arm(r, symbol, "above", 100, mode="once") for symbol in others}
    listener = Listener(r, Matcher(r), feed.url, poll_s=0.02, heartbeat_s=0.05,
                        recv_timeout_s=0.02, backoff=Backoff(0.01, 0.1))
    thread = threading.Thread(target=listener.run, daemon=True)
    thread.start()
    assert eventually(lambda: all(f"{s.lower()}@aggTrade" in feed.subscriptions()
                                  for s in others), timeout=10)
    # The listener's heartbeat (a write) waits out a pause while the trades land and it is
    # told to stop: it then reads one round of 5, reads the other 5 ahead, and stops.
    # its status says connected (so it serves): pause until its next beat (a write) waits
    assert eventually(lambda: r.hget(keys.LISTENER, "state") == "connected")
    waiting = r.info("clients")["blocked_clients"]  # an earlier test's reader, blocked
    r.client_pause(10_000, all=False)
    try:
        assert eventually(lambda: r.info("clients")["blocked_clients"] > waiting)
        assert feed.trades([(s, 101) for s in others])
        listener.stop.set()
    finally:
        r.client_unpause()  # the beat returns; it reads a round of 5, 5 more ahead, stops
    thread.join(10)
    assert sorted(a for a, _ in fired(r)) == sorted(alerts)
