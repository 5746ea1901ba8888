"""Alert input, every kind's: API names and values in, the model's fields out.

The page's form and the JSON API send the same names; the form sends text and every field
it has, so there an empty field counts as not given. Each field is checked on its own in
fields.py; here they make an alert of a kind, and a PATCH is laid over one.
"""

from webapp.alerts import index as alert_index
from webapp.alerts import messages, routing
from webapp.alerts.fields import (
    DEFAULT_BUFFER,
    WINDOWS,
    buffer,
    condition,
    cooldown,
    expiry,
    given,
    message,
    mode,
    note,
    number,
    pct,
    points,
    symbol,
    window,
)
from webapp.clock import utcnow
from webapp.exceptions import InvalidInput

# Each kind's own fields; every kind also takes COMMON.
KINDS = {
    "above": ("price",), "below": ("price",), "volume_above": ("price",),
    "crossing_up": ("price",), "crossing_down": ("price",), "crossing": ("price",),
    "pct_up": ("pct", "window"), "pct_down": ("pct", "window"),
    "channel_exit": ("low", "high"), "channel_enter": ("low", "high"),
}
CONDITIONS = tuple(KINDS)
KIND_FIELDS = ("price", "pct", "window", "low", "high")
COMMON = ("symbol", "type", "mode", "buffer", "cooldown_s", "expires_at", "note", "message",
          "channels")
FIELD_ALIASES = {"condition": "type", "target": "price"}  # the model's names
MAX_NAME = 40  # of an unknown field's name, as the answer repeats it


def family(kind):
    """What a kind's level is: `price` (a price or volume), `pct` (a move) or `low` (a channel)."""
    return KINDS[kind][0]


def _level(data, kind, text_ok, errors):
    """The kind's own fields as the model's target, high and window_s."""
    fields = {"target": None, "high": None, "window_s": None}
    if family(kind) == "pct":
        fields["target"] = pct(data.get("pct"), kind, text_ok, errors)
        fields["window_s"] = window(data.get("window"), errors)
        return fields
    names = KINDS[kind]  # ("price",) or ("low", "high")
    values = {}
    for name in names:
        values[name], problem = number(data.get(name), text_ok)
        if problem:
            errors[name] = problem
    fields["target"], fields["high"] = values[names[0]], values.get("high")
    if fields["high"] is not None and fields["target"] is not None and (
            fields["target"] >= fields["high"]):
        errors["high"] = "high must be above low."
    return fields


def _foreign(data, kind, text_ok, errors):
    """Fields of other kinds (named as sent) are refused, not ignored."""
    takes = " and ".join(KINDS[kind])
    for name in (*KIND_FIELDS, "target"):
        if FIELD_ALIASES.get(name, name) not in KINDS[kind] and given(data.get(name), text_ok):
            errors[name] = f"{name} does not apply to type {kind}: it takes {takes}."


def _unknown(data, what):
    """Fields an alert does not have, refused, not ignored: a typo ("mdoe") or a field that
    is only read ("active") would otherwise make another alert than the one meant."""
    known = (*COMMON, *KIND_FIELDS)
    return {name[:MAX_NAME]: f"{name[:MAX_NAME]} is not a field {what}: send any of "
            f"{', '.join(known)}." for name in sorted(set(data) - set(known) - set(FIELD_ALIASES))}


def canonical(data):
    """The input with the model's names for fields (condition, target) as the API's."""
    out = dict(data)
    for alias, name in FIELD_ALIASES.items():
        if alias in out:
            value = out.pop(alias)
            out.setdefault(name, value)
    return out


def validate(data, text_numbers=False, now=None, user_id=None):
    """Check an alert's fields (API names); returns the model's fields or raises InvalidInput.

    `user_id`: whose destinations `channels` may name.
    """
    if not isinstance(data, dict):
        raise InvalidInput({"body": "Send a JSON object."})
    errors = _unknown(data, "of an alert")
    raw, data = data, canonical(data)
    fields = {
        "symbol": symbol(data.get("symbol"), errors),
        "condition": condition(data.get("type"), CONDITIONS, errors),
        "mode": mode(data.get("mode"), errors),
        "cooldown_s": cooldown(data.get("cooldown_s"), text_numbers, errors),
        "expires_at": expiry(data.get("expires_at"), now or utcnow(), errors),
        "note": note(data.get("note"), errors),
        "message": message(data.get("message"), errors),
        "channels": routing.channels(data.get("channels"), user_id, text_numbers, errors),
    }
    if fields["message"] and "message" not in errors:
        _check_template(fields, errors)
    if fields["condition"] in KINDS:
        _foreign(raw, fields["condition"], text_numbers, errors)
        fields.update(_level(data, fields["condition"], text_numbers, errors))
        fields["buffer"], fields["buffer_is_pct"] = _kind_buffer(
            data.get("buffer"), fields, text_numbers, errors)
    elif given(data.get("price"), text_numbers):  # no kind yet: still say what else is wrong
        _level(data, "above", text_numbers, errors)
    if errors:
        raise InvalidInput(errors)
    return fields


def _check_template(fields, errors):
    kind = fields["condition"] if fields["condition"] in KINDS else "above"
    sample = messages.sample(kind, fields["note"], fields["symbol"])
    if problem := messages.problem(fields["message"], sample):
        errors["message"] = problem


def _kind_buffer(value, fields, text_ok, errors):
    """(buffer, is_pct) as the kind reads it; a channel takes one that does not apply."""
    is_given = given(value, text_ok)
    if family(fields["condition"]) == "pct":
        if not is_given:
            _check_default_points(fields, errors)
            return DEFAULT_BUFFER, False
        return points(value, text_ok, fields["target"], errors), False
    amount, is_pct = buffer(value if is_given else None, text_ok, errors)
    if family(fields["condition"]) == "price" and "buffer" not in errors:
        _check_rearm({**fields, "buffer": amount, "buffer_is_pct": is_pct}, errors, is_given)
    return amount, is_pct


def _check_default_points(fields, errors):
    if fields["mode"] == "recurring" and fields["target"] and fields["target"] <= DEFAULT_BUFFER:
        errors["buffer"] = (f"The default buffer ({alert_index.fmt_num(DEFAULT_BUFFER)} points) "
                            "is not smaller than this pct: give a smaller buffer, e.g. 0.1.")


def _check_rearm(fields, errors, given):
    # Past the target by an absolute buffer as large as the target would never re-arm.
    absolute = not fields["buffer_is_pct"] and fields["buffer"] and fields["target"]
    if fields["mode"] == "recurring" and absolute and fields["buffer"] >= fields["target"]:
        default = alert_index.fmt_num(DEFAULT_BUFFER)
        errors["buffer"] = ("Use a buffer smaller than the target, or a percentage like 0.1%."
                            if given else f"The default buffer ({default}) is not smaller than "
                            "this target: give a percentage like 0.1%.")


def kind_fields(alert):
    """The alert's own level fields with their API names: price, pct and window, or low and high."""
    kind = family(alert.condition) if alert.condition in KINDS else "price"
    if kind == "pct":
        names = {seconds: name for name, seconds in WINDOWS.items()}
        return {"pct": alert.target, "window": names.get(alert.window_s)}
    if kind == "low":
        return {"low": alert.target, "high": alert.high}
    return {"price": alert.target}


def buffer_text(alert):
    return f"{alert_index.fmt_num(alert.buffer)}%" if alert.buffer_is_pct else alert.buffer


def as_input(alert):
    """An alert as the API's input: what a PATCH's changes are laid over."""
    return {"symbol": alert.symbol, "type": alert.condition, "mode": alert.mode,
            "buffer": buffer_text(alert), "cooldown_s": alert.cooldown_s, "note": alert.note,
            "message": alert.message, **kind_fields(alert)}


def _in_points(kind):
    return family(kind) == "pct"


def validate_changes(alert, changes, text_numbers=False, now=None, user_id=None):
    """A PATCH: `changes` laid over the alert's fields, checked as a new alert's are.

    A new type keeps the level fields it takes too (above -> crossing_up keeps the price),
    and the buffer unless its unit changes (a move's is in points). An expiry the PATCH
    does not name stands, passed or not, and so do channels (a destination deleted since
    does not block an edit).
    """
    if not isinstance(changes, dict):
        raise InvalidInput({"body": "Send a JSON object."})
    errors = _unknown(changes, "you can change")
    changes = canonical(changes)
    merged = as_input(alert)
    kind = condition(changes.get("type", alert.condition), CONDITIONS, {})
    if kind in KINDS and kind != alert.condition:
        for name in set(KIND_FIELDS) - set(KINDS[kind]):
            merged.pop(name, None)
        if alert.condition not in KINDS or _in_points(kind) != _in_points(alert.condition):
            merged.pop("buffer")  # an amount never becomes points, nor points an amount
    merged.update(changes)
    try:
        fields = validate(merged, text_numbers, now, user_id)
    except InvalidInput as exc:
        errors = {**exc.errors, **errors}  # an unknown field: said as a PATCH says it
    if errors:
        raise InvalidInput(errors)
    for name in ("expires_at", "channels"):
        if name not in changes:
            fields[name] = getattr(alert, name)
    return fields
