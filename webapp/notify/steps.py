"""The slow steps of routed notifications: the ledger, the audit row of a critical one,
the delivery plan. Each is idempotent by notification id, so a batch may run twice."""

import logging

from webapp.core import logs
from webapp.delivery import audit, ledger, plan
from webapp.errors import REDIS_FAULTS, SQL_FAULTS, passes_by_itself
from webapp.extensions import db

log = logging.getLogger(__name__)


def process_batch(notifications):
    """The slow steps for notifications the router stored, each on its own.

    One bad notification must not cost the others their audit rows and deliveries; the job
    still fails at the end, so its batch stays pending and is retried (the steps are
    idempotent).
    """
    results, failed, waiting = [], [], None
    for notification in notifications:
        try:
            results.append(process_many([notification]))
        except Exception as exc:
            db.session.rollback()
            if _passes_by_itself(exc):  # a lock or an outage: one warning for the batch
                waiting = exc
            else:
                log.exception("event=route_process_failed nid=%s", notification.get("id"))
            failed.append(str(notification.get("id")))
            results.append(None)
    if waiting is not None:
        logs.event(log, "route_process_waits", logging.WARNING, notifications=len(failed),
                   error=logs.error_text(waiting))
    if failed:
        raise RuntimeError(f"slow steps failed for notification(s) {', '.join(failed)}")
    return results


def _passes_by_itself(exc):
    return isinstance(exc, REDIS_FAULTS) or (isinstance(exc, SQL_FAULTS) and passes_by_itself(exc))


def process_many(notifications):
    """The slow steps, safe to run twice: audit rows for the critical ones, then the delivery
    plan; each user's settings read once. Returns the ids of the delivery rows queued now."""
    settings = plan.settings(int(n["user_id"]) for n in notifications)
    kept = [n for n in notifications if int(n["user_id"]) in settings]  # others' user is gone
    ledger.record(kept)  # what monthly statements count, kept past the inbox's 7 days
    audit.record(kept)
    return plan.record(kept, settings)
