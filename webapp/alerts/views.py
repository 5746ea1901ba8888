"""The alerts page: list, create inline, edit a row in place, duplicate, pause/resume, delete
(HTMX, with plain-form fallback), symbol suggestions with prices, and the chart's data."""

from datetime import UTC, datetime

from flask import Blueprint, abort, flash, g, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from webapp.accounts import service as accounts
from webapp.alerts import chart, fields, routing, validation
from webapp.alerts import index as alert_index
from webapp.alerts import service as alerts
from webapp.alerts.readings import looked_up
from webapp.errors import is_htmx
from webapp.exceptions import InvalidInput, NotFound
from webapp.market import symbols, tickers
from webapp.preferences import service as preferences

bp = Blueprint("alerts", __name__, url_prefix="/alerts")
bp.add_app_template_filter(alert_index.fmt_num, "fmt_num")
bp.add_app_template_filter(alerts.status, "alert_status")
bp.add_app_template_filter(tickers.age_text, "age")
bp.add_app_template_filter(tickers.volume_text, "volume")
bp.add_app_template_global(validation.kind_fields, "alert_levels")
bp.before_request(accounts.require_login)


@bp.app_template_global()
def my_destinations():
    """The signed-in user's destinations, read once a request (the forms and rows show them)."""
    if "alert_destinations" not in g:
        g.alert_destinations = routing.destinations(current_user.id)
    return g.alert_destinations


@bp.app_template_global()
def alert_routes(alert):
    """Where the alert's notifications go, in words; None when the preferences decide."""
    if alert.channels is None:
        return None
    return routing.labels(alert, {dest.id: dest for dest in my_destinations()})


def _page(form=None, errors=None, status=200):
    rows = alerts.list_alerts(current_user.id)
    return render_template("alerts/index.html", alerts=rows, **looked_up(rows),
                           form=form or {}, errors=errors or {}), status


@bp.get("/")
def index():
    return _page()


def _posted():
    """The posted form as text fields; the ticked channels as a list."""
    form = request.form.to_dict()
    form.pop("csrf_token", None)
    form["channels"] = request.form.getlist("channels")
    return form


# the fields the alert forms show an error beside; any other (a field no form has, sent by
# hand) is said above the form, not lost
FORM_FIELDS = {"symbol", "type", "price", "pct", "window", "low", "high", "mode", "buffer",
               "cooldown_s", "expires_at", "note", "message", "channels"}


def _shown(errors):
    shown = {name: said for name, said in errors.items() if name in FORM_FIELDS}
    others = [said for name, said in errors.items() if name not in FORM_FIELDS]
    if others:
        shown["body"] = " ".join(others)
    return shown


def _as_input(form):
    """The form's fields for the service: the channels as the API takes them, and a picked
    expiry (a local time) with the user's zone.

    The picker gives a wall-clock time without a zone; the page says it is the user's, so
    it is read in their zone. The original stays in `form` to fill the picker again.
    """
    fields = {name: value for name, value in form.items() if name != "routing"}
    fields["channels"] = routing.from_form(form)
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
    form = _posted()
    try:
        alert = alerts.create_alert(current_user.id, _as_input(form), text_numbers=True)
    except InvalidInput as exc:
        errors = _shown(exc.errors)
        if not is_htmx():
            return _page(form, errors, 422)
        html = render_template("alerts/_form.html", form=form, errors=errors)
        return html, 422, {"HX-Retarget": "#alert-form", "HX-Reswap": "outerHTML"}
    if not is_htmx():
        flash(f"Alert on {alert.symbol} created.", "success")
        return redirect(url_for("alerts.index"))
    first = alerts.count_alerts(current_user.id) == 1  # drop the "no alerts yet" row
    row = render_template("alerts/_row.html", alert=alert, **looked_up([alert]), first=first,
                          added=True)
    # The response lands in the table body: bare, the <form> would be parsed in table
    # context, which empties it and strands its fields. A <template> keeps it whole.
    fresh_form = render_template("alerts/_form.html", form={}, errors={}, oob=True)
    return f"{row}<template>{fresh_form}</template>", 201


def _row_or_redirect(alert):
    if not is_htmx():
        return redirect(url_for("alerts.index"))
    return render_template("alerts/_row.html", alert=alert, **looked_up([alert]))


@bp.get("/symbols")
def suggest_symbols():
    """The symbol field's datalist: listed symbols starting with what was typed, each with its
    last price, and the typed symbol's own last price beside the field."""
    typed = request.args.get("symbol", "").strip().upper()
    found = symbols.suggestions(typed)
    quoted = {*found, typed} if fields.SYMBOL_RE.fullmatch(typed) else set(found)
    return render_template("alerts/_symbol_options.html", symbols=found, typed=typed,
                           prices=tickers.last_values(quoted))


def _local_input(dt):
    """A naive UTC datetime as the user's wall-clock time, for a datetime-local field."""
    if dt is None:
        return ""
    zone = preferences.user_zone(current_user.id)
    return dt.replace(tzinfo=UTC).astimezone(zone).strftime("%Y-%m-%dT%H:%M")


def _as_form(alert):
    """The alert as the forms' text fields (API names), numbers written as people write them."""
    fields = {name: "" if value is None else
              alert_index.fmt_num(value) if isinstance(value, float) else str(value)
              for name, value in validation.as_input(alert).items()}
    fields["expires_at"] = _local_input(alert.expires_at)
    fields["routing"], fields["channels"] = routing.as_form(alert)
    return fields


def _edit_form(alert, form, errors=None, status=200):
    template = "alerts/_row_form.html" if is_htmx() else "alerts/edit.html"
    return render_template(template, alert=alert, form=form, errors=errors or {},
                           windows=fields.WINDOWS), status


@bp.get("/<int:alert_id>/edit")
def edit(alert_id):
    """The alert's row as a small form (the whole edit page without JavaScript)."""
    alert = _or_404(alerts.get_alert, alert_id)
    return _edit_form(alert, _as_form(alert))


@bp.post("/<int:alert_id>/edit")
def update(alert_id):
    form = _posted()
    try:
        alert = alerts.update_alert(current_user.id, alert_id, _as_input(form), text_numbers=True)
    except NotFound:
        abort(404)
    except InvalidInput as exc:
        return _edit_form(_or_404(alerts.get_alert, alert_id), form, _shown(exc.errors), 422)
    if not is_htmx():
        flash(f"Alert on {alert.symbol} saved.", "success")
    return _row_or_redirect(alert)


@bp.get("/<int:alert_id>/row")
def row(alert_id):
    """The alert's row (what Cancel swaps back in place of the edit form)."""
    return _row_or_redirect(_or_404(alerts.get_alert, alert_id))


@bp.get("/<int:alert_id>/copy")
def copy(alert_id):
    """Duplicate: the create form filled in with the alert's fields, to change and add."""
    alert = _or_404(alerts.get_alert, alert_id)
    form = _as_form(alert)
    if alerts.status(alert) == "expired":
        form["expires_at"] = ""
    if not is_htmx():
        return _page(form)
    return render_template("alerts/_form.html", form=form, errors={})


@bp.get("/chart/<symbol>")
def chart_data(symbol):
    """The chart's JSON for one symbol: recent prices and where the user's alerts fired."""
    symbol = symbol.upper()
    if not fields.SYMBOL_RE.fullmatch(symbol):
        abort(404)
    return jsonify(chart.data(current_user.id, symbol))


@bp.post("/<int:alert_id>/pause")
def pause(alert_id):
    return _row_or_redirect(_or_404(alerts.set_active, alert_id, False))


@bp.post("/<int:alert_id>/resume")
def resume(alert_id):
    return _row_or_redirect(_or_404(alerts.set_active, alert_id, True))


@bp.post("/<int:alert_id>/delete")
def delete(alert_id):
    _or_404(alerts.delete_alert, alert_id)
    if is_htmx():  # the row's outerHTML swap with nothing removes it; the last brings back
        # the "no alerts yet" row
        last = alerts.count_alerts(current_user.id) == 0
        return render_template("alerts/_empty_again.html") if last else ""
    flash("Alert deleted.", "info")
    return redirect(url_for("alerts.index"))


def _or_404(func, alert_id, *args):
    try:
        return func(current_user.id, alert_id, *args)
    except NotFound:
        abort(404)
