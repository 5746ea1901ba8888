"""Which notification types insist for a user: read by planning, delivery and the pages."""

from webapp.extensions import db
from webapp.models import Preference
from webapp.preferences.service import insisting_types

__all__ = ["insisting_types", "user_types"]


def user_types(user_id):
    """The types that insist for a user, read once (a stream, a page); writes nothing."""
    pref = db.session.get(Preference, user_id)
    return insisting_types(pref if pref is not None else Preference())
