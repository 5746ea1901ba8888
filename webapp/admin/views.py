"""Admin pages: broadcast a system notification to every user; the operations page."""

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from webapp.admin import jobs, rates, status
from webapp.exceptions import NotFound
from webapp.notify import intake as events
from webapp.notify import types as notification_types

bp = Blueprint("admin", __name__, url_prefix="/admin")
bp.add_app_template_filter(rates.percent, "percent")


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


@bp.get("/ops")
def ops():
    """The operations page; its HTMX refresh gets the partial alone."""
    return _render_ops()


@bp.post("/ops/jobs/<job_id>/retry")
def retry_job(job_id):
    try:
        jobs.retry(job_id)
        message, category = f"Job {job_id} is queued again.", "success"
    except NotFound:
        message, category = f"Job {job_id} is no longer among the failed jobs.", "error"
    if request.headers.get("HX-Request"):
        return _render_ops(notice=(category, message))
    flash(message, category)
    return redirect(url_for("admin.ops"), 303)


def _render_ops(notice=None):
    template = "admin/_ops.html" if request.headers.get("HX-Request") else "admin/ops.html"
    return render_template(template, facts=status.gather(), windows=rates.WINDOWS,
                           notice=notice)
