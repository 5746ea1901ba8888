"""`make run` on a fresh clone, as a newcomer runs it: in a terminal, the README's CLI from a
second shell while it runs, then Ctrl-C. Only what is committed is there; the virtualenv is
borrowed from this checkout so the test needs no network."""

import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from devtools import redisd

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"

pytestmark = pytest.mark.skipif(not (ROOT / ".git").exists() or not VENV.exists(),
                                reason="needs a git checkout with its .venv")


class Terminal:
    """A command in a pseudo-terminal of its own, as a shell would start it."""

    def __init__(self, argv, cwd, env):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become the command
            os.chdir(cwd)
            os.execvpe(argv[0], argv, env)
        self.output = b""

    def read_until(self, pattern, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.output):
                return True
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.output += os.read(self.fd, 65536)
                except OSError:  # the command ended and closed the terminal
                    return bool(re.search(pattern, self.output))
        return False

    def ctrl_c(self):
        os.write(self.fd, b"\x03")

    def wait(self, timeout):
        self.read_until(rb"\Z\A", timeout)  # drain until the terminal closes
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.1)
        os.kill(self.pid, signal.SIGKILL)
        return None


def test_make_run_on_a_fresh_clone_serves_takes_cli_from_a_second_shell_and_stops(tmp_path):
    clone = tmp_path / "tickerbell"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    (clone / ".venv").symlink_to(VENV)
    port = redisd.free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL", "INSTANCE_PATH", "FLASK_APP")}
    env.update(PORT=str(port), BINANCE_WS_URL="ws://127.0.0.1:9")  # no outside host
    run = Terminal(["make", "run"], clone, env)
    try:
        assert run.read_until(rb"Tickerbell is running: open http://127.0.0.1:%d/" % port, 120), \
            run.output[-3000:].decode(errors="replace")
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/auth/login", timeout=30).status_code == 200
        # a second shell, as the README says: no REDIS_URL, it finds make run's Redis
        flask = [str(clone / ".venv/bin/flask"), "--app", "wsgi"]
        shell = {k: v for k, v in env.items() if k != "PORT"}
        made = subprocess.run([*flask, "users", "create", "new@example.com", "--password",
                               "a long password"], cwd=clone, env=shell, capture_output=True,
                              text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        key = subprocess.run([*flask, "apikeys", "create", "new@example.com"], cwd=clone,
                             env=shell, capture_output=True, text=True, timeout=60)
        assert key.returncode == 0, key.stderr
        plaintext = key.stdout.strip().splitlines()[-1]
        me = requests.get(f"{base}/api/v1/me", headers={"X-API-Key": plaintext}, timeout=30)
        assert me.status_code == 200 and me.json()["email"] == "new@example.com"
        inbox = requests.get(f"{base}/api/v1/notifications", timeout=30,
                             headers={"X-API-Key": plaintext}).json()
        assert any("API key created" in n["title"] for n in inbox)  # the notice arrived
        assert (clone / "instance" / "tickerbell.db").exists()
    finally:
        run.ctrl_c()
        code = run.wait(60)
    text = run.output.decode(errors="replace")
    assert code == 0, text[-3000:]  # make itself exits 0: Ctrl-C is not an error
    assert "Traceback" not in text and "make: ***" not in text
    assert not (clone / "instance" / "redis.url").exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/auth/login", timeout=2)
