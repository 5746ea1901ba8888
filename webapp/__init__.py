"""Tickerbell: a notification hub for crypto traders."""

import os

from flask import Flask

from webapp.config import ROOT, VERSION, Config, database_url

__version__ = VERSION


def create_app(config=None):
    """Build the app: configuration, extensions, blueprints, operator commands. Nothing else.

    The background processes' commands (`flask worker`, `listener`, `scheduler`) are the
    worker's: `wsgi.py` adds them, so this package never imports `worker`.
    """
    app = Flask(__name__, template_folder="../templates", static_folder="../static")
    # "//" in a path (an id of "../" sent encoded, say) is no route: the API never redirects
    app.url_map.merge_slashes = False
    settings = Config()
    app.config.from_object(settings)
    app.config.update(config or {})
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url(app.config["SQLALCHEMY_DATABASE_URI"])
    settings.SECRET_KEY = app.config["SECRET_KEY"]
    settings.check()
    app.instance_path = app.config["INSTANCE_PATH"]
    os.makedirs(app.instance_path, exist_ok=True)  # SQLite and the outbox live here

    from webapp import errors, extensions, models  # noqa: F401  (models register tables)
    from webapp.accounts import sessions
    from webapp.core import database, headers, logs, text
    from webapp.destinations import service as destinations

    database.init_app(app)  # binds extensions.db, with the backend's engine options
    extensions.migrate.init_app(app, extensions.db, directory=str(ROOT / "migrations"),
                                render_as_batch=True)  # SQLite needs batch ALTERs
    extensions.login_manager.init_app(app)
    app.session_interface = sessions.CookieSessions()
    logs.init_app(app)  # the request id, before any request logs or is refused (CSRF)
    text.init_app(app)  # a form's bytes checked before CSRF's check reads the form
    extensions.csrf.init_app(app)
    extensions.sock.init_app(app)
    extensions.init_redis(app)
    errors.init_app(app)
    headers.init_app(app)
    destinations.init_app(app)
    _register_blueprints(app)
    _register_commands(app)
    return app


def _register_blueprints(app):
    from webapp import extensions
    from webapp.accounts.settings import bp as settings_bp
    from webapp.accounts.views import bp as auth_bp
    from webapp.admin.views import bp as admin_bp
    from webapp.alerts import api as _alerts_api  # noqa: F401  (each adds its routes to api_bp)
    from webapp.alerts.views import bp as alerts_bp
    from webapp.api import health as _health_api  # noqa: F401
    from webapp.api.blueprint import bp as api_bp
    from webapp.dashboard.views import bp as dashboard_bp
    from webapp.delivery import api as _delivery_api  # noqa: F401
    from webapp.delivery.views import bp as delivery_bp
    from webapp.destinations import api as _destinations_api  # noqa: F401
    from webapp.destinations.views import bp as destinations_bp
    from webapp.hooks import api as _hooks_api  # noqa: F401
    from webapp.hooks import views as hooks_views
    from webapp.inbox import api as _inbox_api  # noqa: F401
    from webapp.inbox.views import bp as inbox_bp
    from webapp.insist import api as _insist_api  # noqa: F401
    from webapp.insist.views import bp as insist_bp
    from webapp.live.views import bp as live_bp
    from webapp.metrics.views import bp as metrics_bp
    from webapp.notify import api as _notify_api  # noqa: F401
    from webapp.preferences import api as _preferences_api  # noqa: F401
    from webapp.preferences.views import bp as preferences_bp

    extensions.csrf.exempt(api_bp)  # the API checks CSRF itself for session callers
    extensions.csrf.exempt(hooks_views.receive)  # a webhook's secret URL is its credential
    for bp in (dashboard_bp, auth_bp, settings_bp, api_bp, alerts_bp, preferences_bp, delivery_bp,
               admin_bp, inbox_bp, live_bp, destinations_bp, insist_bp, hooks_views.bp,
               metrics_bp):
        app.register_blueprint(bp)


def _register_commands(app):
    from webapp.accounts import cli as accounts_cli
    from webapp.admin import cli as admin_cli
    from webapp.alerts import cli as alerts_cli
    from webapp.core import commands, installation, keymigration
    from webapp.delivery import cli as delivery_cli
    from webapp.notify import cli as notify_cli

    commands.register(app, (*accounts_cli.COMMANDS, *alerts_cli.COMMANDS,
                            *notify_cli.COMMANDS, *delivery_cli.COMMANDS,
                            *keymigration.COMMANDS, *installation.COMMANDS,
                            *admin_cli.COMMANDS))
