"""The live feed: GET /stream (SSE, session auth) and /ws (WebSocket, API key).

The channel is always the authenticated user's; nothing in the request chooses it. /ws takes
the key in `X-API-Key`, `Authorization: Bearer`, or `?api_key=` because browsers cannot set
headers on a WebSocket (the query form is accepted only here; prefer a header elsewhere).
"""

import threading

from flask import Blueprint, Response, current_app, g, request, url_for
from flask_login import current_user
from simple_websocket import ConnectionClosed
from sqlalchemy.exc import SQLAlchemyError

from webapp.accounts import service as accounts
from webapp.accounts import sessions
from webapp.errors import REDIS_FAULTS, SQL_FAULTS, json_error
from webapp.extensions import db, sock
from webapp.inbox import service as inbox
from webapp.insist import service as insist
from webapp.live import fanout, handoff
from webapp.live.sse import Renderer, SseState, SseStream
from webapp.live.ws import WholeSends, WsState
from webapp.market import tickers

bp = Blueprint("live", __name__)

HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}  # a user's notifications
TRY_AGAIN_LATER = 1013  # a WebSocket close code (RFC 6455's registry)


def _renderer():
    app = current_app._get_current_object()
    render = app.extensions.get("sse_renderer")
    if render is None:
        render = Renderer(app, url_for("inbox.index"))
        app.extensions["sse_renderer"] = render
    return render


def _open(user_id, last_event_id, make_client, still_valid):
    """Attach a stream for the user, then read what it missed: (hub, client, replay, unread).

    None if `still_valid()` says the credential ended meanwhile.
    """
    symbols = tickers.watched_symbols(user_id)
    db.session.remove()  # a stream lives for hours: hand the SQL connection back now
    hub = fanout.get_hub(current_app._get_current_object())
    client = make_client(hub, symbols)
    try:  # attached first, read second: nothing published in between is lost
        hub.attach(client)
        # Asked again once attached: a logout from here on reaches the stream as `revoked`.
        valid = still_valid()
        db.session.remove()
        if not valid:
            client.close()
            hub.detach(client)
            return None
        replay, unread = inbox.snapshot(user_id, last_event_id, redis=hub.reader)
    except BaseException:
        client.close()
        hub.detach(client)
        raise
    return hub, client, replay, unread


def _log_in_first():
    return Response("Log in to follow the live feed.\n", 401, mimetype="text/plain")


def _ended(uid, replay, insisting):
    """{nid: escalation} of the replayed notifications that insist whose reminders have ended
    (acknowledged while this browser was away, say): their items and toasts say so, with no
    Acknowledge button. None when the database cannot say (they show the button: it answers)."""
    nids = [n["id"] for _, event, n in replay
            if event == "notification" and n.get("type") in insisting]
    if not nids:
        return None
    try:
        return {nid: esc for nid, esc in insist.states(uid, nids).items() if esc.ended}
    except SQLAlchemyError:  # any: the stream is attached already, and must not be left so
        return None
    finally:
        db.session.remove()  # the stream lives for hours: its SQL connection goes back now


@bp.get("/stream")
def stream():
    if not current_user.is_authenticated:
        return _log_in_first()
    if request.method == "HEAD":
        return Response(mimetype="text/event-stream", headers=HEADERS)
    uid, render = current_user.id, _renderer()
    insisting = insist.user_types(uid)  # the toasts' Acknowledge buttons
    last = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    sid = sessions.current_sid()
    tag, valid = sessions.session_credential(sid), lambda: sessions.alive(sid)
    raw = handoff.server_socket(request.environ)
    if raw is not None:  # gunicorn + gevent: the hub writes to the socket from now on
        opened = _open(uid, last, lambda hub, symbols: handoff.SocketStream(
            hub, uid, symbols, raw, credential=tag), valid)
        if opened is None:
            return _log_in_first()
        _, stream, replay, unread = opened
        state = SseState(render, unread, insisting, _ended(uid, replay, insisting))
        stream.start(state, state.opening(replay))
        return handoff.HandedOff()
    opened = _open(uid, last, lambda hub, symbols: fanout.Client(uid, symbols, credential=tag),
                   valid)
    if opened is None:
        return _log_in_first()
    hub, client, replay, unread = opened
    state = SseState(render, unread, insisting, _ended(uid, replay, insisting))
    body = SseStream(hub, client, state, replay)
    return Response(body, mimetype="text/event-stream", headers=HEADERS,
                    direct_passthrough=True)


@bp.before_request
def authenticate_websocket():
    if request.endpoint != "live.websocket":
        return None
    # browsers cannot set headers on a WebSocket, so /ws alone also takes ?api_key=
    secret = accounts.presented_secret("X-API-Key") or request.args.get("api_key")
    key = accounts.live_api_key(secret) if secret else None
    if key is None:
        return json_error(401, "unauthorized", "Send an API key (X-API-Key or ?api_key=).")
    g.ws_user_id, g.ws_key_id = key.user_id, key.id
    return None


def _close_when_gone(ws, client):
    try:
        while ws.connected:
            ws.receive(timeout=None)  # what a client sends is not used; this notices a close
    except ConnectionClosed:
        pass
    client.close()


@sock.route("/ws", bp=bp)
def websocket(ws):
    ping_s = current_app.config.get("SOCK_SERVER_OPTIONS", {}).get("ping_interval")
    ws.sock = WholeSends(ws.sock, timeout=ping_s)  # a peer that takes nothing that long goes
    uid, key_id = g.ws_user_id, g.ws_key_id
    tag = sessions.key_credential(key_id)
    try:
        opened = _open(uid, request.args.get("last_event_id"),
                       lambda hub, symbols: fanout.Client(uid, symbols, credential=tag,
                                                          transport="ws"),
                       lambda: accounts.api_key_is_live(key_id))
    except (*REDIS_FAULTS, *SQL_FAULTS):
        # past the handshake no HTTP 503 can go (its bytes would garble the socket): the
        # close code for it, Try Again Later; the client reconnects and replays
        ws.close(reason=TRY_AGAIN_LATER, message="The live feed is unavailable; try again.")
        return
    if opened is None:
        return  # the key was revoked while connecting: the socket closes
    hub, client, replay, unread = opened
    threading.Thread(target=_close_when_gone, args=(ws, client), daemon=True).start()
    try:
        state = WsState(unread)
        for text in state.opening(replay):
            ws.send(text)
        del replay  # the socket may live for hours: do not keep the backlog
        while True:
            batch = client.next_batch()
            if client.closed:
                return
            for text in state.texts(batch):
                ws.send(text)
    except TimeoutError:
        return  # WholeSends gave the peer up: the socket is shut, the stream ends
    finally:
        hub.detach(client)
