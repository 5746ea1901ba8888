"""The inbox page: filters, mark read, mark all read, delete, load more (htmx partials)."""

from functools import cached_property

import redis
from flask import Blueprint, abort, has_request_context, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from webapp.errors import is_htmx
from webapp.exceptions import InvalidInput, NotFound
from webapp.inbox import service as inbox
from webapp.insist import service as insist
from webapp.notify.types import TYPES

bp = Blueprint("inbox", __name__, url_prefix="/notifications")

TRUE = {"1", "true", "on", "yes"}


class LiveFeed:
    """What base.html needs for the nav badge and the stream, read only if a page uses it."""

    def __init__(self, user_id):
        self.user_id = user_id

    @cached_property
    def _state(self):
        try:
            # The newest replay id: the stream replays whatever lands after this page was read.
            return inbox.head(self.user_id)
        except (redis.ConnectionError, redis.TimeoutError):
            return None, None  # the 503 page renders without a live feed

    @property
    def unread(self):
        return self._state[1]

    @property
    def stream_url(self):
        last = self._state[0]
        return None if last is None else url_for("live.stream", last_event_id=last)


@bp.app_context_processor
def live_feed():
    if not has_request_context() or not current_user or not current_user.is_authenticated:
        return {}
    return {"live": LiveFeed(current_user.id), "inbox_url": url_for("inbox.index")}


def _filters(args):
    ntype = args.get("type") or ""
    return {"type": ntype if ntype in TYPES else "",
            "unread": "1" if args.get("unread", "").lower() in TRUE else ""}


def _page(filters, cursor=None, limit=inbox.DEFAULT_PAGE_SIZE):
    try:
        items, next_cursor = inbox.list_page(current_user.id, limit=limit, cursor=cursor,
                                             unread=bool(filters["unread"]),
                                             ntype=filters["type"] or None)
    except InvalidInput:
        abort(400)
    return {"items": [inbox.to_api(n) for n in items], "next_cursor": next_cursor,
            "filters": {k: v for k, v in filters.items() if v},
            "insist": insist.marks(current_user.id, items)}


def _badge(count):
    return render_template("inbox/_badge.html", count=count, oob=True)


@bp.get("/")
@login_required
def index():
    filters, cursor = _filters(request.args), request.args.get("cursor") or None
    page = _page(filters, cursor)
    if is_htmx() and cursor:
        return render_template("inbox/_page.html", **page)
    return render_template("inbox/index.html", types=TYPES, **page)


@bp.post("/<nid>/read")
@login_required
def mark_read(nid):
    try:
        item, count = inbox.mark_read(current_user.id, nid)
    except NotFound:
        abort(404)
    if not is_htmx():
        return redirect(url_for(".index"))
    return render_template("inbox/_item.html", n=inbox.to_api(item),
                           insist=insist.marks(current_user.id, [item])) + _badge(count)


@bp.post("/<nid>/delete")
@login_required
def delete(nid):
    try:
        inbox.delete(current_user.id, nid)
    except NotFound:
        abort(404)
    if not is_htmx():
        return redirect(url_for(".index"))
    return _badge(inbox.unread_count(current_user.id))


@bp.post("/read-all")
@login_required
def read_all():
    filters, unread = _filters(request.args), 0
    if request.args.get("type") and not filters["type"]:  # not "every type": refused
        abort(400)
    if filters["type"]:  # the page shows one type: only those
        unread = inbox.mark_type_read(current_user.id, filters["type"])[1]
    else:
        inbox.mark_all_read(current_user.id)
    if not is_htmx():
        return redirect(url_for(".index", **_page(filters)["filters"]))
    # as many as the page showed (its "Load more"s), so the reader keeps their place
    shown = request.form.get("shown", "")
    limit = min(max(int(shown) if shown.isdigit() and len(shown) < 4 else 0,
                    inbox.DEFAULT_PAGE_SIZE), inbox.MAX_PAGE_SIZE)
    return render_template("inbox/_list.html", **_page(filters, limit=limit)) + _badge(unread)
