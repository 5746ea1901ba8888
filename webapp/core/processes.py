"""Each process's heartbeat in Redis, so /api/v1/health tells who is alive and how often
each was restarted.

One hash, `tb:processes`: a field per running process (`<role>:<host>:<pid>`) holding its
start time, its last beat and the restarts its supervisor counted (`TICKERBELL_RESTARTS`,
set by `make run`; under systemd, `systemctl show -p NRestarts` tells instead).
"""

import json
import logging
import os
import socket
import threading

from webapp import clock, keys
from webapp.core.outage import REDIS_DOWN

KEY = keys.PROCESSES
ROLES = ("web", "worker", "listener", "scheduler")
REQUIRED = ("worker", "listener", "scheduler")  # without one of these the product is degraded
DEFAULT_BEAT_S = 5.0
# After a failed beat (Redis away) the next try comes this soon: back, Redis hears from every
# process within it, not up to a beat later, when the health check would count them gone.
RETRY_BEAT_S = 0.5
END_WAIT_S = 1.0  # how long a stopping process waits to leave the list
STALE_MS = 15_000  # three missed beats: that process is gone
FORGET_MS = 3_600_000  # a dead process stays listed for an hour, then its field goes

log = logging.getLogger(__name__)
beating = None  # this process's own heartbeat field, once it beats


class Heartbeat:
    """Beats every `every_s` seconds from a daemon thread (a greenlet under gevent)."""

    def __init__(self, redis, role, every_s=DEFAULT_BEAT_S):
        """`redis`: the data plane's client, or a function giving it (a web worker's, on a
        cluster, is made on first use, which fails while the cluster is down)."""
        self._redis, self.every_s = redis, every_s
        self.field = f"{role}:{socket.gethostname()}:{os.getpid()}"
        self.body = {"role": role, "host": socket.gethostname(), "pid": os.getpid(),
                     "started_ms": clock.now_ms(),
                     "restarts": int(os.environ.get("TICKERBELL_RESTARTS") or 0)}
        self.stop = threading.Event()
        self.thread = None

    @property
    def redis(self):
        return self._redis() if callable(self._redis) else self._redis

    def beat(self):
        self.redis.hset(KEY, self.field, json.dumps({**self.body, "beat_ms": clock.now_ms()}))

    def start(self):
        global beating
        beating = self.field
        self.thread = threading.Thread(target=self._run, name=f"heartbeat-{self.body['role']}",
                                       daemon=True)
        self.thread.start()
        return self

    def _run(self):
        failing = False
        while True:
            wait_s = self.every_s
            try:
                self.beat()
                failing = False
            except REDIS_DOWN:  # the process's main loop reports the outage; a beat retries
                wait_s = min(wait_s, RETRY_BEAT_S)
            except Exception:  # noqa: BLE001 - Redis full, read-only...: beat on, said once
                if not failing:
                    log.exception("heartbeat failed; beating on")
                failing = True
            if self.stop.wait(wait_s):
                break
        self._leave()  # here, after the last beat: no beat still on its way lands after it

    def _leave(self):
        try:
            self.redis.hdel(KEY, self.field)
        except REDIS_DOWN:
            pass

    def end(self, timeout=END_WAIT_S):
        """Stop beating and leave the list: best effort, waiting at most `timeout` (Redis may
        be gone; a process stopping must not hang on it)."""
        global beating
        if beating == self.field:
            beating = None
        self.stop.set()
        if self.thread is None:
            self._leave()
        else:
            self.thread.join(timeout)


def report(redis, now_ms=None):
    """Per role: how many are alive, the restarts counted, and each process's beat."""
    now_ms = now_ms or clock.now_ms()
    roles = {role: {"alive": 0, "restarts": 0, "processes": []} for role in ROLES}
    forget = []
    for field, raw in redis.hgetall(KEY).items():
        try:
            body = json.loads(raw)
            age = now_ms - int(body["beat_ms"])
            role = roles.setdefault(body["role"], {"alive": 0, "restarts": 0, "processes": []})
        except (ValueError, KeyError, TypeError):
            forget.append(field)
            continue
        if age > FORGET_MS:
            forget.append(field)
            continue
        alive = age <= STALE_MS
        role["alive"] += alive
        if alive:  # a silent one's count is its own past run's (a make run before Ctrl-C)
            role["restarts"] = max(role["restarts"], int(body.get("restarts") or 0))
        role["processes"].append({
            "host": body.get("host"), "pid": body.get("pid"), "alive": alive,
            "heartbeat_age_ms": age, "restarts": int(body.get("restarts") or 0),
            "uptime_s": max(0, (now_ms - int(body.get("started_ms") or now_ms)) // 1000)})
    if forget:
        redis.hdel(KEY, *forget)
    return roles


def gone(redis, fields, silent_ms, now_ms=None):
    """Those of the heartbeat fields whose process has not beaten for `silent_ms` (killed).
    One that left the list (stopped, or its Redis lost it) is not known to be gone."""
    fields = list(dict.fromkeys(fields))
    now_ms = now_ms or clock.now_ms()
    dead = set()
    for field, raw in zip(fields, redis.hmget(KEY, fields) if fields else [], strict=True):
        try:
            if now_ms - int(json.loads(raw)["beat_ms"]) > silent_ms:
                dead.add(field)
        except (TypeError, ValueError, KeyError):
            pass
    return dead


def missing(roles):
    """The required roles with no live process."""
    return [role for role in REQUIRED if not roles.get(role, {}).get("alive")]
