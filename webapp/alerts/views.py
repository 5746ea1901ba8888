"""The alerts page: list, create inline, pause/resume, delete (HTMX, with plain-form fallback)."""

from datetime import datetime

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from webapp.accounts import service as accounts
from webapp.alerts import index as alert_index
from webapp.alerts import service as alerts
from webapp.errors import is_htmx
from webapp.exceptions import InvalidInput, NotFound
from webapp.market import symbols, tickers
from webapp.preferences import service as preferences

bp = Blueprint("alerts", __name__, url_prefix="/alerts")
bp.add_app_template_filter(alert_index.fmt_num, "fmt_num")
bp.add_app_template_filter(alerts.status, "alert_status")
bp.add_app_template_filter(tickers.age_text, "age")
bp.add_app_template_filter(tickers.volume_text, "volume")
bp.before_request(accounts.require_login)


def _looked_up(rows):
    """What the rows show beside each alert: its symbol's last values and verdict."""
    seen = {a.symbol for a in rows}
    return {"prices": tickers.last_values(seen), "checks": symbols.verdicts(seen)}


def _page(form=None, errors=None, status=200):
    rows = alerts.list_alerts(current_user.id)
    return render_template("alerts/index.html", alerts=rows, **_looked_up(rows),
                           form=form or {}, errors=errors or {}), status


@bp.get("/")
def index():
    return _page()


def _in_utc(form):
    """The form's fields for the service: a picked expiry (a local time) with the user's zone.

    The picker gives a wall-clock time without a zone; the page says it is the user's, so
    it is read in their zone. The original stays in `form` to fill the picker again.
    """
    fields = dict(form)
    try:
        picked = datetime.fromisoformat(form.get("expires_at", "").strip())
    except ValueError:
        return fields  # empty or not a date: the service says what is wrong
    if picked.tzinfo is None:
        fields["expires_at"] = picked.replace(
            tzinfo=preferences.user_zone(current_user.id)).isoformat()
    return fields


@bp.post("/")
def create():
    form = request.form.to_dict()
    try:
        alert = alerts.create_alert(current_user.id, _in_utc(form), text_numbers=True)
    except InvalidInput as exc:
        if not is_htmx():
            return _page(form, exc.errors, 422)
        html = render_template("alerts/_form.html", form=form, errors=exc.errors)
        return html, 422, {"HX-Retarget": "#alert-form", "HX-Reswap": "outerHTML"}
    if not is_htmx():
        flash(f"Alert on {alert.symbol} created.", "success")
        return redirect(url_for("alerts.index"))
    first = alerts.count_alerts(current_user.id) == 1  # drop the "no alerts yet" row
    row = render_template("alerts/_row.html", alert=alert, **_looked_up([alert]), first=first)
    # The response lands in the table body: bare, the <form> would be parsed in table
    # context, which empties it and strands its fields. A <template> keeps it whole.
    fresh_form = render_template("alerts/_form.html", form={}, errors={}, oob=True)
    return f"{row}<template>{fresh_form}</template>", 201


def _row_or_redirect(alert):
    if not is_htmx():
        return redirect(url_for("alerts.index"))
    return render_template("alerts/_row.html", alert=alert, **_looked_up([alert]))


@bp.get("/symbols")
def suggest_symbols():
    """The symbol field's datalist: listed symbols starting with what was typed."""
    found = symbols.suggestions(request.args.get("symbol", ""))
    return render_template("alerts/_symbol_options.html", symbols=found)


@bp.post("/<int:alert_id>/pause")
def pause(alert_id):
    return _row_or_redirect(_or_404(alerts.set_active, alert_id, False))


@bp.post("/<int:alert_id>/resume")
def resume(alert_id):
    return _row_or_redirect(_or_404(alerts.set_active, alert_id, True))


@bp.post("/<int:alert_id>/delete")
def delete(alert_id):
    _or_404(alerts.delete_alert, alert_id)
    if is_htmx():
        return ""  # the row's outerHTML swap with nothing removes it
    flash("Alert deleted.", "info")
    return redirect(url_for("alerts.index"))


def _or_404(func, alert_id, *args):
    try:
        return func(current_user.id, alert_id, *args)
    except NotFound:
        abort(404)
