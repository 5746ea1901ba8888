"""Acknowledging from the web: the inbox's and the toast's button, and the signed link's page."""

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from webapp.delivery import audit
from webapp.errors import is_htmx
from webapp.exceptions import NotFound
from webapp.extensions import db
from webapp.inbox import service as inbox
from webapp.insist import links, service
from webapp.models import Escalation

bp = Blueprint("insist", __name__)


@bp.post("/notifications/<nid>/ack")
@login_required
def acknowledge(nid):
    """The inbox item (or the toast, from=toast) swapped for one that says who acknowledged."""
    try:
        esc = service.ack(current_user.id, nid, f"{current_user.email} on the web")
        item = inbox.to_api(inbox.get(current_user.id, nid))
    except NotFound:
        abort(404)
    except service.NotInsisting as exc:
        abort(409, str(exc))
    if not is_htmx():
        return redirect(url_for("inbox.index"))
    if request.form.get("from") == "toast":
        return render_template("inbox/_toast.html", n=item, acked=esc)
    return render_template("inbox/_item.html", n=item, insist={nid: esc},
                           inbox_url=url_for("inbox.index"))


def _subject(token):
    """(nid, user id, channel, title, escalation) the link names; 404 if it names nothing."""
    found = links.read(token)
    if found is None:
        abort(404)
    nid, user_id, channel = found
    esc = db.session.get(Escalation, nid)
    if esc is not None and esc.user_id == user_id:
        return nid, user_id, channel, esc.title, esc
    n = audit.load(nid, user_id)
    if n is None or int(n["user_id"]) != user_id:
        abort(404)
    return nid, user_id, channel, n["title"], None


@bp.get("/ack/<token>")
def ack_page(token):
    """What the link acknowledges, and a button: opening it acknowledges nothing."""
    nid, _, channel, title, esc = _subject(token)
    return render_template("insist/ack.html", title=title, esc=esc, channel=channel)


@bp.post("/ack/<token>")
def ack_by_link(token):
    nid, user_id, channel, title, _ = _subject(token)
    try:
        esc = service.ack(user_id, nid, f"link in the {channel}")
    except NotFound:
        abort(404)
    except service.NotInsisting as exc:
        abort(409, str(exc))
    return render_template("insist/ack.html", title=title, esc=esc, channel=channel, done=True)
