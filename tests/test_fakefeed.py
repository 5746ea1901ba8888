import json
import os
import re
import signal
import subprocess
import sys

import pytest
from websocket import ABNF, WebSocketBadStatusException, WebSocketException, create_connection

from devtools.fakefeed import FakeFeed
from devtools.fakefeed_demo import DEMO_MARKETS


@pytest.fixture
def feed():
    with FakeFeed() as f:
        yield f


OPEN = []


@pytest.fixture(autouse=True)
def close_clients():
    yield
    while OPEN:
        OPEN.pop().shutdown()


def connect(feed, streams=()):
    query = "?streams=" + "/".join(streams) if streams else ""
    ws = create_connection(f"{feed.url}/stream{query}", timeout=5)
    OPEN.append(ws)
    return ws


def recv_json(ws):
    """The next text message as JSON; control frames are skipped (pings answered)."""
    while True:
        opcode, frame = ws.recv_data_frame(True)
        if opcode == ABNF.OPCODE_TEXT:
            return json.loads(frame.data)
        if opcode == ABNF.OPCODE_CLOSE:
            raise ConnectionError(frame.data)


def request(ws, method, params=None, request_id=1):
    msg = {"method": method, "id": request_id}
    if params is not None:
        msg["params"] = params
    ws.send(json.dumps(msg))
    return recv_json(ws)


def test_combined_stream_wraps_aggtrade_and_trade_payloads(feed):
    ws = connect(feed, ["btcusdt@aggTrade", "btcusdt@trade"])
    assert feed.wait_for_subscription("btcusdt@trade")
    assert feed.trade("btcusdt", 65010.5, qty=0.25, ts_ms=1763700000123) == 2
    messages = {m["stream"]: m["data"] for m in (recv_json(ws), recv_json(ws))}
    agg, trade = messages["btcusdt@aggTrade"], messages["btcusdt@trade"]
    assert agg["e"] == "aggTrade" and trade["e"] == "trade"
    for data in (agg, trade):
        assert data["s"] == "BTCUSDT"
        assert data["p"] == "65010.50000000" and data["q"] == "0.25000000"
        assert data["T"] == data["E"] == 1763700000123
    assert {"a", "f", "l"} <= agg.keys() and "t" in trade


def test_mini_ticker_payload_has_string_close_and_volumes(feed):
    ws = connect(feed, ["ethusdt@miniTicker"])
    assert feed.wait_for_subscription("ethusdt@miniTicker")
    feed.mini_ticker("ETHUSDT", close=3400.5, volume=1234.5)
    msg = recv_json(ws)
    assert msg["stream"] == "ethusdt@miniTicker"
    data = msg["data"]
    assert data["e"] == "24hrMiniTicker" and data["s"] == "ETHUSDT"
    assert data["c"] == "3400.50000000" and data["v"] == "1234.50000000"
    assert float(data["q"]) == pytest.approx(3400.5 * 1234.5)
    assert isinstance(data["E"], int)


def test_events_go_only_to_subscribers_of_the_stream(feed):
    ws = connect(feed, ["solusdt@aggTrade"])
    assert feed.wait_for_subscription("solusdt@aggTrade")
    assert feed.trade("BTCUSDT", 1.0) == 0
    assert feed.trade("SOLUSDT", 170.0) == 1
    assert recv_json(ws)["data"]["s"] == "SOLUSDT"


def test_subscribe_unsubscribe_and_list(feed):
    ws = connect(feed)
    assert request(ws, "SUBSCRIBE", ["btcusdt@aggTrade", "ethusdt@aggTrade"], 7) == {
        "result": None, "id": 7}
    assert request(ws, "UNSUBSCRIBE", ["btcusdt@aggTrade"], 8) == {"result": None, "id": 8}
    assert request(ws, "LIST_SUBSCRIPTIONS", None, 9) == {"result": ["ethusdt@aggTrade"], "id": 9}
    assert feed.subscriptions() == {"ethusdt@aggTrade"}


@pytest.mark.parametrize("message, code", [
    ({"method": "SUBSCRIBE", "params": ["BTCUSDT@aggTrade"], "id": 1}, 2),
    ({"method": "SUBSCRIBE", "params": "btcusdt@aggTrade", "id": 1}, 2),
    ({"method": "FROBNICATE", "id": 1}, 2),
])
def test_bad_requests_get_binance_style_errors(feed, message, code):
    ws = connect(feed)
    ws.send(json.dumps(message))
    reply = recv_json(ws)
    assert reply["code"] == code and reply["id"] == 1 and reply["msg"]


def test_invalid_json_gets_error_code_3(feed):
    ws = connect(feed)
    ws.send("{not json")
    assert recv_json(ws)["code"] == 3


def test_more_than_five_messages_a_second_disconnects_and_is_recorded(feed):
    ws = connect(feed)
    for i in range(6):
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
    with pytest.raises(ConnectionError):
        for _ in range(7):
            recv_json(ws)
    assert feed.wait(lambda f: f.violations)
    assert "messages in 1 s" in feed.violations[0][1]


def test_stream_cap_refuses_url_and_subscribe_beyond_it():
    with FakeFeed(max_streams=2) as feed:
        with pytest.raises(WebSocketBadStatusException) as refused:
            connect(feed, ["a1@aggTrade", "a2@aggTrade", "a3@aggTrade"])
        assert refused.value.status_code == 400
        ws = connect(feed, ["a1@aggTrade", "a2@aggTrade"])
        assert request(ws, "SUBSCRIBE", ["a3@aggTrade"])["code"] == 2
        assert len(feed.violations) == 2


def test_server_pings_and_counts_pongs():
    with FakeFeed(ping_interval=0.05) as feed:
        ws = connect(feed)
        pings = 0
        while pings < 2:
            opcode, _ = ws.recv_data_frame(True)  # websocket-client answers with a pong
            pings += opcode == ABNF.OPCODE_PING
        assert feed.wait(lambda f: f.pongs >= 2)


def test_refuse_n_times_then_accept(feed):
    feed.refuse(2)
    for _ in range(2):
        with pytest.raises(WebSocketBadStatusException) as refused:
            connect(feed)
        assert refused.value.status_code == 503
    connect(feed)
    assert feed.wait_for_connections(1) and feed.refused_total == 2


def test_refuse_until_told(feed):
    feed.refuse(status=429)
    for _ in range(3):
        with pytest.raises(WebSocketBadStatusException):
            connect(feed)
    feed.accept()
    connect(feed)
    assert feed.wait_for_connections(1)


def test_drop_all_cuts_every_connection(feed):
    sockets = [connect(feed, ["btcusdt@aggTrade"]) for _ in range(2)]
    assert feed.wait(lambda f: f.connection_count == 2)
    assert feed.drop_all() == 2
    for ws in sockets:
        with pytest.raises((ConnectionError, WebSocketException)):
            recv_json(ws)
    assert feed.wait(lambda f: f.connection_count == 0)


def test_server_shutdown_event_then_close(feed):
    ws = connect(feed)
    assert feed.wait_for_connections(1)
    feed.server_shutdown(close_after=0.01)
    msg = recv_json(ws)
    assert msg["stream"] == "!serverShutdown"
    assert msg["data"]["e"] == "serverShutdown" and isinstance(msg["data"]["E"], int)
    with pytest.raises(ConnectionError):
        recv_json(ws)


def test_demo_mode_replays_prices_near_real_levels():
    with FakeFeed(demo=True) as feed:
        ws = connect(feed, ["btcusdt@aggTrade", "btcusdt@miniTicker"])
        seen = set()
        while seen != {"aggTrade", "24hrMiniTicker"}:
            data = recv_json(ws)["data"]
            seen.add(data["e"])
            value = float(data["p"] if data["e"] == "aggTrade" else data["c"])
            assert value == pytest.approx(DEMO_MARKETS["BTCUSDT"][0], rel=0.05)


def test_runs_as_a_process_and_stops_on_sigterm():
    # Port 0: the feed binds a port of the OS's choice and says which; nothing can race it.
    proc = subprocess.Popen([sys.executable, "-m", "devtools.fakefeed", "--port", "0",
                             "--demo"], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    try:
        url = re.fullmatch(r"fake Binance feed on (ws://127\.0\.0\.1:[1-9]\d*) \(demo prices\)",
                           proc.stdout.readline().strip()).group(1)
        ws = create_connection(f"{url}/stream?streams=ethusdt@aggTrade", timeout=5)
        OPEN.append(ws)
        assert recv_json(ws)["data"]["s"] == "ETHUSDT"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        proc.stdout.close()


def test_wait_returns_false_on_timeout(feed):
    assert feed.wait_for_subscription("nothing@aggTrade", timeout=0.05) is False
