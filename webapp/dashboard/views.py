from flask import Blueprint, redirect, render_template, url_for
from flask_login import current_user, login_required

from webapp.core import health
from webapp.extensions import get_redis
from webapp.inbox import service as inbox
from webapp.market import tickers
from webapp.preferences import service as preferences

bp = Blueprint("dashboard", __name__)


@bp.app_template_filter("iso")
def iso(dt):
    """A naive UTC datetime as ISO 8601 with a Z, for <time datetime>."""
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ") if dt else ""


@bp.app_context_processor
def time_zone():
    """The user's zone for <meta name="tz">: app.js shows every <time> in it."""
    if current_user and current_user.is_authenticated:
        return {"user_zone": preferences.user_zone(current_user.id).key}
    return {"user_zone": "UTC"}

DASHBOARD_FEED = 10  # the newest notifications; the inbox page has the rest


@bp.get("/")
def index():
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.dashboard"))
    return redirect(url_for("auth.login"))


@bp.get("/dashboard")
@login_required
def dashboard():
    items, _ = inbox.list_page(current_user.id, limit=DASHBOARD_FEED)
    watched = tickers.tickers(tickers.watched_symbols(current_user.id))
    return render_template("dashboard/index.html", items=[inbox.to_api(n) for n in items],
                           tickers=watched)


@bp.get("/status")
@login_required
def status():
    """The degraded-service banner: empty when all is well (htmx polls it)."""
    body, _ = health.report(get_redis())
    return render_template("dashboard/_status.html", problems=health.problems(body))
