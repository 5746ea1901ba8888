"""Admin pages: broadcast a system notification to every user."""

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from webapp.notify import intake as events
from webapp.notify import types as notification_types

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.before_request
@login_required
def require_admin():
    if not current_user.is_admin:
        abort(404)  # the page does not exist for anyone else


@bp.route("/broadcast", methods=["GET", "POST"])
def broadcast():
    form = {k: request.form.get(k, "") for k in ("type", "priority", "title", "message")}
    errors = {}
    if request.method == "POST":
        item = {**{k: v for k, v in form.items() if v}, "target": "system"}
        result = events.publish([item], source="broadcast")[0]
        if result["status"] == "accepted":
            flash(f"Sent to {len(result['ids'])} users.", "success")
            return redirect(url_for("admin.broadcast"), 303)
        errors = result["errors"]
    return render_template("admin/broadcast.html", form=form, errors=errors,
                           types=notification_types.TYPES,
                           priorities=notification_types.PRIORITIES), 422 if errors else 200
