"""Configuration: one class, every key read from the environment variable of the same name."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTANCE = Path(os.environ.get("INSTANCE_PATH", ROOT / "instance"))

DEV_SECRET_KEY = "dev-only-not-secret"


def _bool(name, default):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name, default):
    return int(os.environ.get(name, default))


class Config:
    """Defaults suit a developer's machine; production sets the environment."""

    def __init__(self):
        env = os.environ
        self.ENV = env.get("TICKERBELL_ENV", "development")
        self.SECRET_KEY = env.get("SECRET_KEY", DEV_SECRET_KEY)
        self.SQLALCHEMY_DATABASE_URI = database_url(
            env.get("DATABASE_URL", f"sqlite:///{INSTANCE / 'tickerbell.db'}")
        )
        self.REDIS_URL = env.get("REDIS_URL", "redis://127.0.0.1:6379/0")
        self.BINANCE_WS_URL = env.get("BINANCE_WS_URL", "wss://stream.binance.com:9443")
        self.INSTANCE_PATH = str(INSTANCE)
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
        self.TESTING = False

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
