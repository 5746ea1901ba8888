"""Pages about what went out: the deliveries log, the audit trail, the digest and statement
previews."""

from flask import Blueprint, abort, render_template, request
from flask_login import current_user
from sqlalchemy import select

from webapp.accounts import service as accounts
from webapp.delivery import audit, digest_email, digests, statements
from webapp.delivery.stats import delivery_stats
from webapp.destinations import service as destinations
from webapp.exceptions import InvalidInput
from webapp.extensions import db
from webapp.inbox import service as inbox
from webapp.insist import service as insist
from webapp.models import MAX_ID, DeliveryLog
from webapp.preferences import service as preferences

bp = Blueprint("delivery", __name__)
bp.before_request(accounts.require_login)
PAGE = 100


def _titles(nids):
    return inbox.titles(current_user.id, nids)


@bp.get("/deliveries")
def index():
    """The newest PAGE deliveries, then older ones by `before` (a row id)."""
    query = select(DeliveryLog).where(DeliveryLog.user_id == current_user.id)
    before = request.args.get("before", type=int)
    if before is not None and before <= MAX_ID:  # past what an id holds: the first page
        query = query.where(DeliveryLog.id < max(0, before))
    rows = db.session.scalars(query.order_by(DeliveryLog.id.desc()).limit(PAGE + 1)).all()
    older = rows[PAGE - 1].id if len(rows) > PAGE else None
    rows = rows[:PAGE]
    titles = _titles([r.notification_id for r in rows
                      if not digest_email.is_digest(r.notification_id)])
    return render_template("delivery/index.html", rows=rows, titles=titles, older=older,
                           stats=delivery_stats(user_id=current_user.id),
                           names=destinations.channel_names(current_user.id),
                           off=destinations.switched_off(current_user.id))


@bp.get("/audit")
def audit_trail():
    try:
        before = audit.parse_before(request.args.get("before"))
    except InvalidInput as exc:
        abort(400, exc.errors["before"])
    rows, cursor = audit.page(current_user.id, audit.DEFAULT_PAGE, before)
    return render_template("delivery/audit.html", rows=rows, cursor=cursor,
                           insisted=insist.recent(current_user.id))


@bp.get("/digest-preview")
def digest_preview():
    kind = request.args.get("kind", "daily")
    if kind not in digests.KINDS:
        abort(404)
    subject, text, html = digests.preview(current_user, kind)
    return render_template("delivery/digest_preview.html", kind=kind, kinds=digest_email.TITLES,
                           subject=subject, text=text, html=html)


@bp.get("/statement-preview")
def statement_preview():
    subject, text, html = statements.preview(current_user)
    enabled = preferences.preferences_for(current_user.id).email_monthly_statements
    return render_template("delivery/statement_preview.html", subject=subject, text=text,
                           html=html, enabled=enabled)
