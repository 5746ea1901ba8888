"""Which notification types insist for a user: read by planning, delivery and the pages."""

from webapp.extensions import db
from webapp.models import Preference
from webapp.notify import types as notification_types


def insisting_types(pref):
    """The types that insist for this user (None in the column: urgent and critical)."""
    if pref.insist_types is None:
        return notification_types.URGENT_TYPES | notification_types.CRITICAL_TYPES
    return frozenset(pref.insist_types)


def user_types(user_id):
    """The types that insist for a user, read once (a stream, a page); writes nothing."""
    pref = db.session.get(Preference, user_id)
    return insisting_types(pref if pref is not None else Preference())
