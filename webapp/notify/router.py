"""The router: a notification goes into its user's inbox, then to the audit trail and out.

Used by the events API, the app's own security events, broadcasts, the CLI and the matcher's
slow path. The hot part (inbox, live feed) runs in the caller; the slow steps (SQL audit row,
delivery plan) run from a drain job of the routed streams (webapp/notify/slowsteps.py) or the
slow-path consumer, idempotent by notification id.

    route_many  -> inbox.store_many (+ slowsteps.in_script on one Redis, else slowsteps.add)
    steps.process_batch / route_fired -> audit.record -> plan.record -> dispatch.send jobs
"""

from webapp import clock
from webapp.core import metrics
from webapp.delivery import audit
from webapp.extensions import get_redis, is_cluster
from webapp.inbox import service as inbox
from webapp.notify import slowsteps, steps
from webapp.notify import types as notification_types

# RQ jobs queued before the routed streams name it here (webapp.notify.router.process_batch)
from webapp.notify.steps import process_batch  # noqa: F401


def route(notification, now_ms=None, source="app"):
    """Store one notification in its user's inbox and live feed; queue its slow steps."""
    return route_many([notification], now_ms=now_ms, source=source)[0]


def route_many(notifications, now_ms=None, source="app", once=None, checked=False):
    """Store all or none (InvalidInput before any write), queue the slow steps in batches.

    Returns [(nid, event_id)] in the order given. `source` labels them in /metrics. `once`:
    a keyed request's (tag, first try's ms), which store each user's part once (inbox.store_many).
    `checked`: the events intake made them (intake.validate: every field checked and filled
    in, each dict its own), so they go in as they are: checking and copying a batch's
    thousand again cost a tenth of the request.
    """
    created = now_ms or clock.now_ms()
    filled = notifications if checked else [with_defaults(n) for n in notifications]
    if is_cluster(get_redis()):  # the routed streams live in another slot than the inboxes
        results = inbox.store_many(filled, now_ms=created, once=once, checked=checked)
        for n, (nid, _) in zip(filled, results, strict=True):  # our own copies: no copy again
            n["id"], n["created_at"] = nid, created
        slowsteps.add([filled[start:start + slowsteps.DEFAULT_BATCH]
                       for start in range(0, len(filled), slowsteps.DEFAULT_BATCH)])
    else:  # one round trip: the inbox's script adds the batches to the routed streams
        results, kicked = inbox.store_many(filled, now_ms=created, route=slowsteps.in_script,
                                           once=once, checked=checked)
        slowsteps.kick(kicked)
    metrics.notifications_created(filled, source)
    return results


def with_defaults(notification):
    """The registry's default priority and empty source references filled in."""
    ntype = notification.get("type")
    kind = notification_types.get(ntype) if isinstance(ntype, str) else None
    filled = dict(notification)  # a copy of its own: route_many adds the id to it
    for field in inbox.SOURCE_FIELDS:
        filled[field] = notification.get(field) or ""
    filled["priority"] = notification.get("priority") or (kind.default_priority if kind else
                                                           "normal")
    filled["data"] = notification.get("data") or {}
    return filled


def route_fired(fired):
    """Slow steps for (nid, user_id) pairs already in the inbox (the matcher's); idempotent.

    Returns the ids of the delivery rows queued now.
    """
    return steps.process_many(audit.load_many(fired))
