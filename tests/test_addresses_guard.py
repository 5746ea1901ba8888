"""The guard Apprise sends within (webapp/core/addresses.py `public_only`): while it holds, the
user's names resolve to public addresses only, for every way a library connects, in a plain
process (the RQ worker) and under gevent (the web process's test sends)."""

import subprocess
import sys
import textwrap
from pathlib import Path

from webapp.core import addresses

ROOT = Path(__file__).resolve().parent.parent

CHECK = textwrap.dedent("""
    import smtplib, socket, threading
    from flask import Flask
    from webapp.core import addresses

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]

    def serve():
        while True:
            conn, _ = server.accept()
            conn.sendall(b"220 hello\\r\\n")
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    reached = []
    with Flask("guard").app_context():
        with addresses.public_only(["localhost"]) as refused:
            for way, connect in [
                    ("lookup", lambda: socket.getaddrinfo("localhost", port)),
                    ("connect", lambda: socket.create_connection(("localhost", port), 2).close()),
                    ("smtp", lambda: smtplib.SMTP("localhost", port, timeout=2).close())]:
                try:
                    connect()
                    reached.append(way)
                except OSError:
                    pass
            other = socket.create_connection(("127.0.0.1", port), 2)  # a name not guarded
            other.close()
        after = socket.create_connection(("localhost", port), 2)  # the guard is gone
        after.close()
    print("reached", sorted(reached), "refused", len(refused))
""")


def run(prelude=""):
    done = subprocess.run([sys.executable, "-c", prelude + CHECK], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_a_guarded_name_reaches_no_private_address_in_a_plain_process():
    assert run() == "reached [] refused 3"


def test_a_guarded_name_reaches_no_private_address_under_gevent():
    assert run("from gevent import monkey; monkey.patch_all()\n") == "reached [] refused 3"


def test_the_operators_proxies_are_theirs_to_choose_with_or_without_a_scheme(monkeypatch):
    """requests reads `proxy.corp:3128` as http://proxy.corp:3128; so must the guard, or a
    proxy on a private address would stop every Apprise send."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "proxy.corp:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.5:8080")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    assert addresses._proxies() == {"proxy.corp", "10.0.0.5"}
