"""LOG_FORMAT=json from a process's first line: a process run on its own (systemd, not `make
run`, which wraps stray lines itself) whose start fails still writes only JSON."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.redisd import free_port

ROOT = Path(__file__).resolve().parent.parent
FLASK = Path(sys.executable).parent / "flask"
GUNICORN = Path(sys.executable).parent / "gunicorn"


def _records(text):
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines, "nothing was written"
    return [json.loads(line) for line in lines]  # every line one JSON object


def _refused_start(tmp_path):
    """The environment of a production start without its SECRET_KEY: refused at once."""
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "TICKERBELL_PROCESS")}
    return {**env, "LOG_FORMAT": "json", "TICKERBELL_ENV": "production",
            "INSTANCE_PATH": str(tmp_path), "REDIS_URL": "redis://127.0.0.1:1/0"}


@pytest.mark.parametrize("role", ["worker", "listener", "scheduler"])
def test_a_background_process_refused_at_start_says_why_in_one_json_record(tmp_path, role):
    done = subprocess.run([str(FLASK), "--app", "wsgi", role], cwd=ROOT, timeout=60,
                          env=_refused_start(tmp_path), capture_output=True, text=True)
    assert done.returncode != 0
    records = _records(done.stdout + done.stderr)
    [failure] = [r for r in records if r["level"] == "CRITICAL"]
    assert failure["role"] == role and "SECRET_KEY must be set" in failure["message"]
    assert "Traceback" in failure["exc"] and "\n" not in failure["message"]


def test_the_web_server_refused_at_start_writes_json_only(tmp_path):
    done = subprocess.run([str(GUNICORN), "--workers", "1", "wsgi:app"], cwd=ROOT, timeout=60,
                          env={**_refused_start(tmp_path), "PORT": str(free_port())},
                          capture_output=True, text=True)
    assert done.returncode != 0
    records = _records(done.stdout + done.stderr)
    # gunicorn logs the worker's failure, then repeats it on stderr: a record too
    assert any(r["logger"] == "stderr" and "SECRET_KEY must be set" in r["message"]
               for r in records)
    assert {r["role"] for r in records} == {"web"}


def test_loose_lines_a_thread_s_traceback_and_an_uncaught_error_become_records():
    code = ("from webapp.core.logs import json_from_the_start\n"
            "json_from_the_start(argv=['flask', '--app', 'wsgi', 'listener'])\n"
            "import sys, threading, traceback\n"
            "sys.stderr.write('a loose line')\nsys.stderr.write(' goes on\\nand another\\n')\n"
            "def fail():\n    raise KeyError('in a thread')\n"
            "t = threading.Thread(target=fail, name='T1'); t.start(); t.join()\n"
            "try:\n    1 / 0\nexcept ZeroDivisionError:\n"
            "    try:\n        int('x')\n    except ValueError:\n        traceback.print_exc()\n"
            "raise ValueError('boom')\n")
    env = {k: v for k, v in os.environ.items() if k != "TICKERBELL_PROCESS"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60, capture_output=True,
                          text=True, env={**env, "LOG_FORMAT": "json"})
    records = _records(done.stderr)
    assert [(r["logger"], r["message"]) for r in records] == [
        ("stderr", "a loose line goes on"), ("stderr", "and another"),
        ("stderr", "KeyError: 'in a thread'"),  # "Exception in thread T1:" and its frames
        ("stderr", "ZeroDivisionError: division by zero"),  # a chain: a record a part
        ("stderr", "ValueError: invalid literal for int() with base 10: 'x'"),
        ("tickerbell", "ValueError: boom")]
    assert "Exception in thread T1" in records[2]["exc"] and "fail" in records[2]["exc"]
    assert records[4]["exc"].startswith("During handling of the above exception")
    assert records[-1]["level"] == "CRITICAL" and "boom" in records[-1]["exc"]
    assert {r["role"] for r in records} == {"listener"}


def test_under_make_run_the_launcher_wraps_lines_itself():
    """`make run` names each process and groups what it prints raw: not wrapped twice here."""
    code = ("from webapp.core.logs import json_from_the_start\njson_from_the_start()\n"
            "import sys\nsys.stderr.write('plain\\n')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60, capture_output=True,
                          text=True, env={**os.environ, "LOG_FORMAT": "json",
                                          "TICKERBELL_PROCESS": "worker"})
    assert done.stderr == "plain\n"


def test_text_logs_are_left_as_they_are():
    code = "from webapp.core.logs import json_from_the_start\njson_from_the_start()\n1 / 0"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60,
                          capture_output=True, text=True, env={**os.environ, "LOG_FORMAT": "text"})
    assert done.stderr.startswith("Traceback") and "ZeroDivisionError" in done.stderr


def test_a_command_typed_in_a_shell_keeps_its_own_stderr():
    """`flask shell` writes its prompt to stderr, with no line end: wrapped, none showed."""
    code = ("from webapp.core.logs import json_from_the_start\n"
            "json_from_the_start(argv=['flask', '--app', 'wsgi', 'shell'])\n"
            "import sys\nsys.stderr.write('>>> ')\n")
    env = {k: v for k, v in os.environ.items() if k != "TICKERBELL_PROCESS"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60, capture_output=True,
                          text=True, env={**env, "LOG_FORMAT": "json"})
    assert done.stderr == ">>> "
