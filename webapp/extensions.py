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


def init_redis(app):
    """One connection pool per process, made when the app is."""
    app.extensions["redis"] = redis.Redis.from_url(
        app.config["REDIS_URL"],
        decode_responses=True,
        health_check_interval=30,
        socket_connect_timeout=2,
        socket_timeout=5,
        retry_on_timeout=False,
    )


def get_redis() -> redis.Redis:
    return current_app.extensions["redis"]
