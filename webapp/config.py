"""Configuration: one class, every key read from the environment variable of the same name."""

import atexit
import os
from pathlib import Path

VERSION = "0.1.0"
ROOT = Path(__file__).resolve().parent.parent
INSTANCE = Path(os.environ.get("INSTANCE_PATH", ROOT / "instance"))
# `make run` writes its private Redis's address here, so a command from a second shell finds it.
REDIS_ADDRESS_FILE = INSTANCE / "redis.url"
# ... and the folder its processes count their metrics in, so such a command counts there too.
METRICS_DIR_FILE = INSTANCE / "metrics.dir"
# ... and its database: without it, such a command made a SQLite file of its own beside make
# run's Redis, and its user 1 got the notifications of make run's user 1.
DATABASE_ADDRESS_FILE = INSTANCE / "database.url"
# ... and its Redis Cluster: without it, `flask notify` from a shell lacking
# REDIS_CLUSTER_NODES wrote into the private Redis, where no page reads, and said "sent".
CLUSTER_NODES_FILE = INSTANCE / "cluster.nodes"
DEFAULT_DATABASE_URL = f"sqlite:///{INSTANCE / 'tickerbell.db'}"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

DEV_SECRET_KEY = "dev-only-not-secret"


def _bool(name, default):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name, default):
    return int(os.environ.get(name, default))


def private_redis_url():
    """The address of the Redis a running `make run` started, if there is one."""
    try:
        return REDIS_ADDRESS_FILE.read_text().strip() or None
    except OSError:
        return None


def process_mark(pid=None):
    """A process's id and, where /proc says it, its start time: an id alone may be another
    process's by the time it is read (a container's launcher is often pid 1 every time)."""
    pid = pid or os.getpid()
    try:
        started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return str(pid)
    return f"{pid} {started}"


def _still_running(mark):
    """Whether the process a note's `process_mark` names still runs: a kill -9 leaves the
    note. Raises OSError or ValueError when it does not."""
    os.kill(int(mark.split()[0]), 0)
    if len(mark.split()) > 1 and process_mark(int(mark.split()[0])) != mark.strip():
        raise ProcessLookupError(f"process {mark.split()[0]} is another one now")


def running_database_url():
    """The database a running `make run` uses, if one runs."""
    try:
        url, mark = DATABASE_ADDRESS_FILE.read_text().splitlines()
        _still_running(mark)
    except (OSError, ValueError):
        return None
    return url or None


def running_cluster_nodes():
    """The REDIS_CLUSTER_NODES of a running `make run`; empty when none runs on a cluster."""
    try:
        nodes, mark = CLUSTER_NODES_FILE.read_text().splitlines()
        _still_running(mark)
    except (OSError, ValueError):
        return ""
    return nodes


def redis_url_origin(url):
    """Where the Redis at `url` came from, in words (`flask status` says it: a command run
    with `make run` stopped reaches the default, which may be another's Redis)."""
    if os.environ.get("REDIS_URL") == url:
        return "REDIS_URL"
    if private_redis_url() == url:
        return "make run's private Redis"
    if url == DEFAULT_REDIS_URL:
        return "the default: REDIS_URL is unset and make run is not running"
    return "the app's settings"


def join_running_metrics():
    """Count this process's metrics where a running `make run`'s processes count theirs (a
    notification sent with `flask notify` from a second shell shows on /metrics), unless
    PROMETHEUS_MULTIPROC_DIR is set; set empty, it is dropped (prometheus_client would count
    into the current folder). Before prometheus_client is imported: it reads the variable
    once, then."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        if not os.environ["PROMETHEUS_MULTIPROC_DIR"]:
            del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        return
    try:
        path, mark = METRICS_DIR_FILE.read_text().splitlines()
        _still_running(mark)
    except (OSError, ValueError):
        return
    if Path(path).is_dir():
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        atexit.register(_forget_if_nothing_counted, path, os.getpid())


def _forget_if_nothing_counted(path, pid):
    if os.getpid() != pid:  # a forked child's exit: its parent's files are not its own
        return
    from webapp.core import metrics  # imported only once the folder is set

    metrics.forget_if_nothing_counted(path, pid)


def cluster_nodes(text):
    """`host:port,host:port` as [(host, port), ...]; raises ValueError on a malformed entry."""
    nodes = []
    for entry in filter(None, (part.strip() for part in text.split(","))):
        host, sep, port = entry.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"REDIS_CLUSTER_NODES: {entry!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    return nodes


class Config:
    """Defaults suit a developer's machine; production sets the environment."""

    def __init__(self):
        env = os.environ
        self.ENV = env.get("TICKERBELL_ENV", "development")
        self.SECRET_KEY = env.get("SECRET_KEY", DEV_SECRET_KEY)
        self.SQLALCHEMY_DATABASE_URI = database_url(
            env.get("DATABASE_URL") or running_database_url() or DEFAULT_DATABASE_URL)
        self.REDIS_URL = env.get("REDIS_URL") or private_redis_url() or DEFAULT_REDIS_URL
        # host:port,host:port,...: the data plane (index, inboxes, pub/sub, prices, limits)
        # on a Redis Cluster; RQ's queues and schedules stay on REDIS_URL. Empty: one Redis.
        # Unset, with REDIS_URL unset too: a running `make run`'s (set empty: one Redis).
        own = "REDIS_CLUSTER_NODES" in env or env.get("REDIS_URL")
        self.REDIS_CLUSTER_NODES = cluster_nodes(
            env.get("REDIS_CLUSTER_NODES", "") if own else running_cluster_nodes())
        self.BINANCE_WS_URL = env.get("BINANCE_WS_URL", "wss://stream.binance.com:9443")
        # Where the list of trading symbols comes from (exchangeInfo); empty: never fetched,
        # so every symbol is accepted as unverified.
        self.BINANCE_API_URL = env.get("BINANCE_API_URL", "https://api.binance.com").rstrip("/")
        # Seconds between keep-alive comments on an idle /stream (and messages on /ws).
        self.STREAM_KEEPALIVE_S = float(env.get("STREAM_KEEPALIVE_S", 15))
        # /ws pings its peer this often and closes it when the next ping finds no pong: a
        # vanished peer would otherwise hold its stream until TCP gives up. 0: no pings.
        ping_s = float(env.get("WS_PING_INTERVAL_S", 25))
        self.SOCK_SERVER_OPTIONS = {"ping_interval": ping_s or None}
        # The listener: lease TTL, proactive reconnect before Binance's 24 h cut, backoff.
        self.LISTENER_LEASE_TTL_S = float(env.get("LISTENER_LEASE_TTL_S", 10))
        self.LISTENER_MAX_AGE_S = float(env.get("LISTENER_MAX_AGE_S", 23 * 3600 + 50 * 60))
        self.LISTENER_BACKOFF_BASE_S = float(env.get("LISTENER_BACKOFF_BASE_S", 0.5))
        self.LISTENER_BACKOFF_MAX_S = float(env.get("LISTENER_BACKOFF_MAX_S", 5))
        # Symbols split over this many listeners, each its own lease, job and connections;
        # they share Binance's budget of connection attempts per IP (300 in 5 minutes).
        # None: unset here, so 1 (worker/listener/shards.py: a listener beside running ones
        # split otherwise is refused; only a count set is announced to the others).
        self.LISTENER_SHARDS = max(1, _int("LISTENER_SHARDS", 1)) if env.get(
            "LISTENER_SHARDS") else None
        self.LISTENER_CONNECT_BUDGET = _int("LISTENER_CONNECT_BUDGET", 300)
        self.LISTENER_CONNECT_WINDOW_S = float(env.get("LISTENER_CONNECT_WINDOW_S", 300))
        # A bearer token that lets Prometheus scrape /metrics from off the host; empty:
        # loopback callers only.
        self.METRICS_TOKEN = env.get("METRICS_TOKEN", "")
        self.INSTANCE_PATH = str(INSTANCE)
        self.LOG_FORMAT = env.get("LOG_FORMAT", "text")  # text | json (webapp/core/logs.py)
        self.SESSION_COOKIE_HTTPONLY = True
        self.SESSION_COOKIE_SAMESITE = "Lax"
        self.SESSION_COOKIE_SECURE = _bool("SESSION_COOKIE_SECURE", self.ENV == "production")
        self.REMEMBER_COOKIE_HTTPONLY = True
        self.REMEMBER_COOKIE_SAMESITE = "Lax"
        self.REMEMBER_COOKIE_SECURE = self.SESSION_COOKIE_SECURE
        self.PREFERRED_URL_SCHEME = "https" if self.SESSION_COOKIE_SECURE else "http"
        self.WTF_CSRF_TIME_LIMIT = None
        self.MAX_CONTENT_LENGTH = _int("MAX_CONTENT_LENGTH", 2 * 1024 * 1024)
        self.LOGIN_ATTEMPTS_PER_MINUTE = _int("LOGIN_ATTEMPTS_PER_MINUTE", 5)
        self.SQLALCHEMY_ENGINE_OPTIONS = {"pool_pre_ping": True}
        # How long a write waits for another connection's lock before the request answers
        # 503 (see webapp/core/database.py): SQLite's busy timeout, PostgreSQL's lock_timeout.
        self.SQLITE_BUSY_TIMEOUT_MS = _int("SQLITE_BUSY_TIMEOUT_MS", 2000)
        self.PG_LOCK_TIMEOUT_MS = _int("PG_LOCK_TIMEOUT_MS", 2000)
        self._delivery(env)
        self.TESTING = False

    def _delivery(self, env):
        """Notification delivery: providers left unset write to instance/outbox/ instead."""
        # links in emails: where `make run` serves (PORT) unless a public address is given
        port = env.get("PORT", "8000")
        self.PUBLIC_URL = env.get("PUBLIC_URL", f"http://127.0.0.1:{port}").rstrip("/")
        self.SMTP_HOST = env.get("SMTP_HOST", "")
        self.SMTP_PORT = _int("SMTP_PORT", 587)
        self.SMTP_USER = env.get("SMTP_USER", "")
        self.SMTP_PASSWORD = env.get("SMTP_PASSWORD", "")
        self.SMTP_TLS = env.get("SMTP_TLS", "auto")  # auto | starttls | ssl | none
        self.MAIL_FROM = env.get("MAIL_FROM", "Tickerbell <notifications@tickerbell.local>")
        self.TWILIO_ACCOUNT_SID = env.get("TWILIO_ACCOUNT_SID", "")
        self.TWILIO_AUTH_TOKEN = env.get("TWILIO_AUTH_TOKEN", "")
        self.TWILIO_FROM = env.get("TWILIO_FROM", "")
        self.TWILIO_API_BASE = env.get("TWILIO_API_BASE", "")  # tests point it at loopback
        self.VAPID_PRIVATE_KEY = env.get("VAPID_PRIVATE_KEY", "")
        self.VAPID_PUBLIC_KEY = env.get("VAPID_PUBLIC_KEY", "")
        self.VAPID_SUBJECT = env.get("VAPID_SUBJECT", "mailto:admin@tickerbell.local")
        # Accept http:// and local push endpoints (a test's loopback server); never in production.
        self.PUSH_ALLOW_INSECURE_ENDPOINTS = _bool("PUSH_ALLOW_INSECURE_ENDPOINTS", False)
        self.DELIVERY_TIMEOUT = _int("DELIVERY_TIMEOUT", 10)
        self.AUDIT_RETENTION_DAYS = _int("AUDIT_RETENTION_DAYS", 365)
        self.DIGEST_HOUR = _int("DIGEST_HOUR", 8)
        # Fernet keys for destination URLs and secrets at rest, comma-separated: the first
        # encrypts, all decrypt (rotation). Unset: one derived from SECRET_KEY.
        self.ENCRYPTION_KEYS = env.get("ENCRYPTION_KEYS", "")
        # Let destinations reach private and loopback addresses (tests, a LAN's own services).
        self.DESTINATIONS_ALLOW_PRIVATE = _bool("DESTINATIONS_ALLOW_PRIVATE", False)
        # A destination is switched off after this many failed attempts in a row.
        self.DESTINATION_MAX_FAILURES = _int("DESTINATION_MAX_FAILURES", 20)
        # Requests a minute one inbound hook token accepts (/hooks/<token>).
        self.HOOK_RATE_PER_MINUTE = _int("HOOK_RATE_PER_MINUTE", 60)
        # Test messages a minute one user may send (each is a request to a URL they chose).
        self.DESTINATION_TESTS_PER_MINUTE = _int("DESTINATION_TESTS_PER_MINUTE", 10)

    def check(self):
        """Refuse to run in production with a made-up secret."""
        if self.ENV == "production" and (
            self.SECRET_KEY == DEV_SECRET_KEY or len(self.SECRET_KEY) < 16
        ):
            raise RuntimeError(
                "SECRET_KEY must be set to a long random value when TICKERBELL_ENV=production"
            )


def database_url(url):
    # SQLAlchemy picks psycopg2 for a bare postgresql:// URL; we ship psycopg 3.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url
