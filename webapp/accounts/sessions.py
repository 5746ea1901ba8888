"""Server-side sessions: each login gets an id kept in Redis, so logging out really ends it.

Flask's signed cookie carries the session id (`_sid`) beside flask-login's `_user_id`; the user
loader accepts the cookie only while `tb:session:{sid}` names that user. Logging out, "log out
everywhere" and a password change delete the ids and publish a `revoked` event on the user's
channel, on which every web process closes the /stream feeds those sessions opened (revoking
an API key does the same for its /ws sockets: see fanout.Hub.dispatch). A cookie from before
server-side sessions has no id and counts as logged out.

Lifetimes slide: every request that loads the user renews its session's TTL. "Keep me signed
in" makes the cookie permanent and the session live PERMANENT_SESSION_LIFETIME (Flask's,
31 days by default); otherwise a session ends after DEFAULT_IDLE_S without a request.
"""

import json
import secrets

import redis
from flask import current_app, session
from flask.sessions import SecureCookieSessionInterface
from flask_login import login_user, logout_user

from webapp import keys
from webapp.core import pubsub
from webapp.core.quickread import PARSER
from webapp.extensions import get_redis
from webapp.live.fanout import REVOKED

SID = "_sid"  # the session id's key in Flask's signed session cookie
DEFAULT_IDLE_S = 24 * 3600  # an open page polls every 15 s, so only a closed one goes idle
DEFAULT_POOL_SIZE = 32  # connections for session checks per process
DEFAULT_POOL_WAIT_S = 5  # a check queued longer than this answers 503


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed cookie, whose signer is built only for a request that sends one: the
    API's callers send none, and building it was a measurable part of a single event's CPU."""

    def open_session(self, app, request):
        if app.secret_key and self.get_cookie_name(app) not in request.cookies:
            return self.session_class()  # what Flask answers for no cookie, signer unbuilt
        return super().open_session(app, request)


def _redis():
    """The process's client for sessions: every signed-in request asks it, so its connections
    are bounded and a burst (10k browsers reconnecting their streams) queues for them instead
    of failing with "Too many connections" (redis-py's default pool caps at 100 and raises)."""
    app = current_app._get_current_object()
    client = app.extensions.get("sessions_redis")
    if client is None:
        pool = redis.BlockingConnectionPool.from_url(
            app.config["REDIS_URL"], max_connections=DEFAULT_POOL_SIZE,
            timeout=DEFAULT_POOL_WAIT_S, decode_responses=True, socket_connect_timeout=2,
            socket_timeout=5, health_check_interval=30, **PARSER)
        client = app.extensions.setdefault("sessions_redis", redis.Redis(connection_pool=pool))
    return client


def _key(sid):
    return keys.session(sid)


def _user_key(user_id):
    """The set of a user's session ids, for "log out everywhere"."""
    return keys.user_sessions(user_id)


def session_credential(sid):
    """The tag a stream opened with this session carries (see fanout's `revoked` event)."""
    return f"session:{sid}"


def key_credential(key_id):
    """The tag a stream opened with this API key carries."""
    return f"key:{key_id}"


def lifetime(remember):
    if remember:
        return int(current_app.permanent_session_lifetime.total_seconds())
    return DEFAULT_IDLE_S


def _longest():
    return max(lifetime(True), lifetime(False))


def create(user_id, remember=False):
    """A new session id for the user, live in Redis; forgets the user's ended ones."""
    r, sid, users = _redis(), secrets.token_urlsafe(32), _user_key(user_id)
    known = list(r.smembers(users))
    if known:
        pipe = r.pipeline(transaction=False)
        for old in known:
            pipe.exists(_key(old))
        ended = [old for old, live in zip(known, pipe.execute(), strict=True) if not live]
        if ended:
            r.srem(users, *ended)
    pipe = r.pipeline()
    pipe.set(_key(sid), str(user_id), ex=lifetime(remember))
    pipe.sadd(users, sid)
    pipe.expire(users, _longest())
    pipe.execute()
    return sid


def log_in(user, remember=False):
    """Sign the user in to this browser with a fresh server-side session."""
    old = session.get(SID)
    if old:  # a login over a login: the earlier id ends, copies of the old cookie too
        owner = _redis().get(_key(old))
        if owner:
            end(owner, [old])
    session[SID] = create(user.id, remember)
    session.permanent = bool(remember)
    login_user(user)


def current_sid():
    return session.get(SID)


def is_live(user_id):
    """True if this request's session id is live and the user's; renews its TTL (user loader)."""
    sid = session.get(SID)
    if not sid:
        return False  # made before server-side sessions, or logged out
    pipe = _redis().pipeline(transaction=False)
    pipe.getex(_key(sid), ex=lifetime(session.permanent))
    pipe.expire(_user_key(user_id), _longest())
    owner, _ = pipe.execute()
    if owner != str(user_id):
        session.pop(SID, None)  # ended: later requests need not ask Redis
        return False
    return True


def alive(sid):
    """True while the session id has not ended (a stream checks again once attached)."""
    return bool(sid) and bool(_redis().exists(_key(sid)))


def count(user_id):
    """How many live sessions the user has."""
    r = _redis()
    known = list(r.smembers(_user_key(user_id)))
    if not known:
        return 0
    return r.exists(*[_key(sid) for sid in known])


def end(user_id, sids):
    """End these sessions of the user and close the streams they opened."""
    sids = [sid for sid in sids if sid]
    if not sids:
        return
    pipe = _redis().pipeline()
    pipe.delete(*[_key(sid) for sid in sids])
    pipe.srem(_user_key(user_id), *sids)
    pipe.execute()
    end_streams(user_id, [session_credential(sid) for sid in sids])


def end_all(user_id, keep=None):
    """End every session of the user but `keep` (the caller's, after a password change)."""
    known = _redis().smembers(_user_key(user_id))
    end(user_id, [sid for sid in known if sid != keep])


def end_streams(user_id, credentials):
    """Tell every web process to close the user's streams opened with these credentials."""
    message = json.dumps({"event": REVOKED, "data": list(credentials)})
    # on the data plane, where the streams' hubs listen (a Redis Cluster's when there is one)
    pubsub.publish(get_redis(), keys.user_channel(user_id), message)


def log_out(user_id, everywhere=False):
    """End this browser's session (or all of the user's) and forget it in the cookie."""
    if everywhere:
        end_all(user_id)
    else:
        end(user_id, [session.get(SID)])
    session.pop(SID, None)
    session.permanent = False
    logout_user()
