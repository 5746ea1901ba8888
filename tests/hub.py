"""Real loopback servers and helpers for the notification-hub tests (issue 5)."""

import email
import email.policy
import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from webapp.core.queues import QUEUES, rq_connection
from webapp.extensions import db
from webapp.models import User
from worker.runner import JobWorker

WAIT = 10.0  # seconds any wait on a real event may take at most


class Mailbox:
    """aiosmtpd handler keeping every message it is handed."""

    def __init__(self):
        self.messages = []
        self.cond = threading.Condition()

    async def handle_DATA(self, server, session, envelope):
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.cond:
            self.messages.append({"rcpt": list(envelope.rcpt_tos), "msg": parsed})
            self.cond.notify_all()
        return "250 Message accepted"

    def wait_for(self, count, timeout=WAIT):
        with self.cond:
            self.cond.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)


class PortZeroController(Controller):
    """aiosmtpd's Controller on port 0: the OS picks the port as the server binds it, so no
    other process can take it first. The Controller then connects once to its own port to
    start the protocol; it must learn which port that is before it does."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@contextmanager
def serving_mailbox():
    """A Mailbox behind a real SMTP server on loopback (box.port), for as long as it is used."""
    box = Mailbox()
    controller = PortZeroController(box, hostname="127.0.0.1", port=0)
    controller.start()
    box.port = controller.port
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def smtp_server():
    with serving_mailbox() as box:
        yield box


class Recorder(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        server = self.server
        with server.cond:
            headers = {name.lower(): value for name, value in self.headers.items()}
            server.requests.append({"path": self.path, "headers": headers, "body": body})
            status = server.failures and 503 or server.status
            server.failures = max(server.failures - 1, 0)
            server.cond.notify_all()
        payload = json.dumps(server.answer(len(server.requests))).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in server.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


class HttpRecorder(ThreadingHTTPServer):
    """A loopback HTTP server recording POSTs; can fail the next N with 503 or answer `status`."""

    daemon_threads = True

    def __init__(self, answer=lambda n: {}, status=201):
        super().__init__(("127.0.0.1", 0), Recorder)
        self.requests, self.cond = [], threading.Condition()
        self.answer, self.status, self.failures = answer, status, 0
        self.headers = {}  # more headers on every answer (a redirect's Location)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def wait_for(self, count, timeout=WAIT):
        with self.cond:
            self.cond.wait_for(lambda: len(self.requests) >= count, timeout)
            return list(self.requests)


def twilio_answer(n):
    return {"sid": f"SM{n:032d}", "status": "queued", "to": "+14155550100", "body": ""}


@pytest.fixture
def http_recorder():
    servers = []

    def make(answer=lambda n: {}, status=201):
        server = HttpRecorder(answer, status)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


class BurstWorker(JobWorker):
    """`flask worker`'s without its remote-command pubsub thread, whose join costs ~1 s."""

    def subscribe(self):
        self.pubsub_thread = None


def run_jobs(app):
    """Run every queued RQ job to completion in this process, as `flask worker --burst` does."""
    with app.app_context():
        BurstWorker(list(QUEUES), connection=rq_connection()).work(burst=True)
        db.session.remove()


def make_user(app, email_addr, password="correct horse", **prefs):
    from webapp.accounts import service as accounts
    from webapp.preferences import service as preferences

    with app.app_context():
        user = accounts.create_user(email_addr, password)
        if prefs:
            preferences.update(user.id, prefs)
        return user.id


def user_id(app, email_addr):
    with app.app_context():
        return db.session.scalar(db.select(User.id).where(User.email == email_addr))


def poll(check, timeout=WAIT, interval=0.02):
    """Poll `check()` until truthy or the deadline; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
