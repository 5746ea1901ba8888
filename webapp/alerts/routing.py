"""An alert's `channels`: where its notifications go, instead of where the preferences send
them (webapp/delivery/plan.py routes by it).

null: the preferences decide. A list: only these, each the built-in "email", "sms", "push"
or one of the user's destinations (its id, or its name resolved to the id when saved);
[]: the inbox and the live feed only. Stored as built-in names and ids.
"""

from sqlalchemy import select

from webapp.alerts.fields import surrogates
from webapp.exceptions import InvalidInput
from webapp.extensions import db
from webapp.models import Destination, row_id

BUILT_IN = ("email", "sms", "push")
LABELS = {"email": "Email", "sms": "SMS", "push": "Push"}
MAX_CHANNELS = 10
EXAMPLE = 'e.g. ["email", 12, "My Slack"]'


def destinations(user_id):
    """The user's destinations by name, switched off or not."""
    return db.session.scalars(select(Destination).where(
        Destination.user_id == user_id).order_by(Destination.name, Destination.id)).all()


def _one(item, owned, text_ok):
    """(built-in name or destination id, None) or (None, what is wrong with it)."""
    if isinstance(item, str) and text_ok and row_id(item.strip()) is not None:
        item = row_id(item.strip())  # the form's checkboxes send ids as text
    if isinstance(item, bool) or not isinstance(item, int | str):
        return None, f"give a channel's name or a destination's id, {EXAMPLE}"
    if isinstance(item, int):
        if item in owned:
            return item, None
        return None, f"you have no destination {item}"
    if surrogates(item):
        return None, "a lone UTF-16 surrogate is not a character"
    name = item.strip()
    if name.lower() in BUILT_IN:
        return name.lower(), None
    by_name = {dest.name: dest.id for dest in owned.values()}
    if name in by_name:
        return by_name[name], None
    return None, "you have no destination by that name (give email, sms, push or one of yours)"


def channels(value, user_id, text_ok, errors):
    """The alert's channels as stored: None, or a list of built-in names and ids."""
    if value is None:
        return None
    if not isinstance(value, list):
        errors["channels"] = f"Send null (your preferences decide) or a list, {EXAMPLE}."
        return None
    if len(value) > MAX_CHANNELS:
        errors["channels"] = f"Name at most {MAX_CHANNELS} channels."
        return None
    owned = {dest.id: dest for dest in destinations(user_id)} if user_id else {}
    chosen = []
    for position, item in enumerate(value, 1):
        read, problem = _one(item, owned, text_ok)
        if problem is None and read in chosen:
            problem = "it is already in the list"
        if problem:
            errors["channels"] = f"Channel {position}: {problem}."
            return None
        chosen.append(read)
    return chosen


def from_form(form):
    """The form's choice as the API's value: None for "as my preferences say", else the
    ticked boxes (none: the inbox only)."""
    ticked = form.get("channels") or []
    if form.get("routing") not in (None, "", "preferences", "chosen"):
        raise InvalidInput({"channels": 'Choose where it goes: "as my preferences say" or '
                                        '"only the ticked channels".'})
    if form.get("routing") != "chosen":
        if ticked:
            raise InvalidInput({"channels": 'Choose "only the ticked channels" to send to '
                                            "them, or untick them."})
        return None
    return ticked


def as_form(alert):
    """The alert's channels as the form shows them: (routing, ticked values as text)."""
    if alert.channels is None:
        return "preferences", []
    return "chosen", [str(name) for name in alert.channels]


def labels(alert, owned):
    """Where the alert's notifications go, in words; None when the preferences decide.

    `owned`: the user's destinations by id (a deleted one is skipped when sending).
    """
    if alert.channels is None:
        return None
    words = [LABELS.get(name) or (owned[name].name if name in owned else f"deleted #{name}")
             for name in alert.channels]
    return ", ".join(words) if words else "inbox only"
