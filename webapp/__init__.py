"""Tickerbell: a notification hub for crypto traders."""

import os

from flask import Flask

from webapp.config import Config, database_url

__version__ = "0.1.0"


def create_app(config=None):
    """Build the app: configuration, extensions, blueprints. Nothing else."""
    app = Flask(__name__, template_folder="../templates", static_folder="../static")
    settings = Config()
    app.config.from_object(settings)
    app.config.update(config or {})
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url(app.config["SQLALCHEMY_DATABASE_URI"])
    settings.SECRET_KEY = app.config["SECRET_KEY"]
    settings.check()
    app.instance_path = app.config["INSTANCE_PATH"]
    os.makedirs(app.instance_path, exist_ok=True)  # SQLite and the outbox live here

    from webapp import database, errors, extensions, models  # noqa: F401  (models register tables)

    database.init_app(app)  # binds extensions.db, with the backend's engine options
    extensions.migrate.init_app(app, extensions.db, directory=_migrations_dir(),
                                render_as_batch=True)  # SQLite needs batch ALTERs
    extensions.login_manager.init_app(app)
    extensions.csrf.init_app(app)
    extensions.sock.init_app(app)
    extensions.init_redis(app)
    errors.init_app(app)

    from webapp.admin.routes import bp as admin_bp
    from webapp.alertpages.routes import bp as alerts_bp
    from webapp.api import alerts as _api_alerts  # noqa: F401  (adds its routes to api_bp)
    from webapp.api import audit as _api_audit  # noqa: F401  (adds its routes to api_bp)
    from webapp.api import events as _api_events  # noqa: F401
    from webapp.api import health as _api_health  # noqa: F401
    from webapp.api import notifications as _api_notifications  # noqa: F401
    from webapp.api.routes import bp as api_bp
    from webapp.auth.routes import bp as auth_bp
    from webapp.deliverypages.routes import bp as deliveries_bp
    from webapp.main.routes import bp as main_bp
    from webapp.notifications.routes import bp as notifications_bp
    from webapp.preferencepages.routes import bp as preferences_bp
    from webapp.settings.routes import bp as settings_bp
    from webapp.stream.routes import bp as stream_bp

    extensions.csrf.exempt(api_bp)  # the API checks CSRF itself for session callers
    for bp in (main_bp, auth_bp, settings_bp, api_bp, alerts_bp, preferences_bp, deliveries_bp,
               admin_bp, notifications_bp, stream_bp):
        app.register_blueprint(bp)

    from worker.cli import register

    register(app)
    return app


def _migrations_dir():
    from webapp.config import ROOT

    return str(ROOT / "migrations")
