"""Tickerbell: a notification hub for crypto traders."""

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

    from webapp import errors, extensions, models  # noqa: F401  (models register tables)

    extensions.db.init_app(app)
    extensions.migrate.init_app(app, extensions.db, directory=_migrations_dir(),
                                render_as_batch=True)  # SQLite needs batch ALTERs
    extensions.login_manager.init_app(app)
    extensions.csrf.init_app(app)
    extensions.sock.init_app(app)
    extensions.init_redis(app)
    errors.init_app(app)

    from webapp.api.routes import bp as api_bp
    from webapp.auth.routes import bp as auth_bp
    from webapp.main.routes import bp as main_bp
    from webapp.settings.routes import bp as settings_bp

    extensions.csrf.exempt(api_bp)  # the API checks CSRF itself for session callers
    for bp in (main_bp, auth_bp, settings_bp, api_bp):
        app.register_blueprint(bp)

    from worker.cli import register

    register(app)
    return app


def _migrations_dir():
    from webapp.config import ROOT

    return str(ROOT / "migrations")
