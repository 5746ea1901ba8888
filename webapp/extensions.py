"""Extensions, created unbound here and bound to the app in create_app."""

import redis
from flask import current_app
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sock import Sock
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message_category = "info"
csrf = CSRFProtect()
sock = Sock()


REDIS_POOL_SIZE = 100
REDIS_POOL_WAIT_S = 5


def init_redis(app):
    """One connection pool per process, made when the app is.

    A blocking pool: when every connection is busy (a burst of streams opening at once), a
    request waits its turn for up to REDIS_POOL_WAIT_S instead of failing at once.
    """
    pool = redis.BlockingConnectionPool.from_url(
        app.config["REDIS_URL"], max_connections=REDIS_POOL_SIZE, timeout=REDIS_POOL_WAIT_S,
        decode_responses=True, health_check_interval=30, socket_connect_timeout=2,
        socket_timeout=5, retry_on_timeout=False)
    app.extensions["redis"] = redis.Redis(connection_pool=pool)


def get_redis() -> redis.Redis:
    return current_app.extensions["redis"]
