"""/metrics from the first scrape: every family the issue names is there before anything
happened (rate() needs a series' first step), and a command run beside `make run` that
counted nothing leaves no value files in its folder."""

import os
import subprocess
import sys
from pathlib import Path

from tests.test_metrics import parse

ROOT = Path(__file__).resolve().parent.parent

AT_ZERO = [
    ("tickerbell_ticks_received_total", {"group": "0"}),
    ("tickerbell_ticks_matched_total", {"group": "7"}),
    ("tickerbell_alerts_fired_total", {"type": "PRICE_ALERT"}),
    ("tickerbell_notifications_total", {"type": "ORDER_EXECUTED", "source": "events"}),
    # every source, not only alerts' and events': a first hook's notification is a step too
    ("tickerbell_notifications_total", {"type": "WEBHOOK_ALERT", "source": "hook"}),
    ("tickerbell_notifications_total", {"type": "ACCOUNT_SECURITY", "source": "security"}),
    ("tickerbell_live_streams", {"transport": "ws"}),
    ("tickerbell_listener_reconnects_total", {"reason": "dropped"}),
    ("tickerbell_deliveries_total", {"channel": "email", "status": "deferred"}),
    ("tickerbell_delivery_latency_seconds_count", {"channel": "push"}),
    ("tickerbell_events_total", {"outcome": "rejected"}),
]


def test_every_family_is_on_the_first_scrape(tmp_path, redis_url):
    """A web process's first scrape, with nothing counted yet in its folder (the tests' own
    process has counted plenty by now)."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "REDIS_URL": redis_url,
           "DATABASE_URL": f"sqlite:///{tmp_path / 'site.db'}",
           "INSTANCE_PATH": str(tmp_path), "SECRET_KEY": "families"}
    script = ("from webapp import create_app\n"
              "print(create_app().test_client().get('/metrics').get_data(as_text=True))")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    samples = parse(done.stdout)
    for name, labels in AT_ZERO:
        assert samples.get((name, frozenset(labels.items()))) == 0.0, name


def command(tmp_path, code):
    """A process that joins the folder of a running launcher (this test's process) as a
    command from a second shell does, runs `code`, and exits."""
    env = {**{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
           "INSTANCE_PATH": str(tmp_path)}
    script = ("from webapp.config import join_running_metrics\n"
              "join_running_metrics()\n"
              "from webapp.core import metrics\n"
              "metrics.count_from_zero()\n" + code + "\nimport os\nprint(os.getpid())")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.split()[-1]


def test_a_command_that_counted_nothing_leaves_no_files(tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    (tmp_path / "metrics.dir").write_text(f"{folder}\n{os.getpid()}\n")
    quiet = command(tmp_path, "")
    assert not list(folder.glob(f"*_{quiet}.db"))
    counted = command(tmp_path, "metrics.EVENTS.labels('accepted').inc()")
    assert list(folder.glob(f"counter_{counted}.db"))  # what it counted stays on /metrics
