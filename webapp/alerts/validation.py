"""Alert input, every kind's: API names and values in, the model's fields out.

The page's form and the JSON API send the same names; the form sends text and every field
it has, so there an empty field counts as not given.
"""

import math
import re
from datetime import UTC, datetime

from webapp.alerts import index as alert_index
from webapp.clock import utcnow
from webapp.exceptions import InvalidInput
from webapp.market import symbols

DEFAULT_BUFFER = 0.5
MAX_TARGET = 1e15
MAX_BUFFER_PCT = 50
MAX_PCT = 1000
MAX_COOLDOWN_S = 30 * 86400
NOTE_MAX = 200
MESSAGE_MAX = 500
SYMBOL_RE = re.compile(r"[A-Z0-9]{5,20}")
NUMBER_RE = re.compile(r"[+-]?\d*\.?\d+(?:[eE][+-]?\d+)?", re.ASCII)
GROUPED_RE = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", re.ASCII)  # 65,000 or 1,234.5
TOO_BIG = "Give a number below 10^15."
MODES = ("once", "recurring")
# Each kind's own fields; every kind also takes COMMON.
KINDS = {
    "above": ("price",), "below": ("price",), "volume_above": ("price",),
    "crossing_up": ("price",), "crossing_down": ("price",), "crossing": ("price",),
    "pct_up": ("pct", "window"), "pct_down": ("pct", "window"),
    "channel_exit": ("low", "high"), "channel_enter": ("low", "high"),
}
CONDITIONS = tuple(KINDS)
KIND_FIELDS = ("price", "pct", "window", "low", "high")
COMMON = ("symbol", "type", "mode", "buffer", "cooldown_s", "expires_at", "note", "message")
WINDOWS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "24h": 86400}
# Names a client written for the brief may send for `type`, beside our own.
ALIASES = {
    "price_above": "above", "price_below": "below", "volume": "volume_above",
    "volume_alert": "volume_above", "price_alert_above": "above", "price_alert_below": "below",
}
FIELD_ALIASES = {"condition": "type", "target": "price"}  # the model's names


def family(kind):
    """What a kind's level is: `price` (a price or volume), `pct` (a move) or `low` (a channel)."""
    return KINDS[kind][0]


def _number(value, text_ok, example="65000"):
    """(float, None) for a finite number in (0, 10^15), else (None, what is wrong with it).

    Form text may group thousands as people write them (65,000.5); the JSON API wants
    numbers, and says so when it gets a string that holds one.
    """
    if isinstance(value, str):
        text = value.strip()
        if GROUPED_RE.fullmatch(text):
            text = text.replace(",", "")
        if not NUMBER_RE.fullmatch(text):
            return None, f"Give a number, e.g. {example}." if text else "Required: give a number."
        if not text_ok:
            return None, f"Send a JSON number ({text}), not a string."
        value = float(text)
    if value is None:
        return None, "Required: give a number."
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"Give a number, e.g. {example}."
    try:
        value = float(value)
    except OverflowError:  # an int too big for a float
        return None, TOO_BIG
    if not math.isfinite(value):
        return None, "Give a finite number."
    if value <= 0:
        return None, "Give a number above 0."
    if value >= MAX_TARGET:
        return None, TOO_BIG
    return value, None


def _symbol(value, errors):
    symbol = value.strip().upper() if isinstance(value, str) else ""
    if not SYMBOL_RE.fullmatch(symbol):
        errors["symbol"] = "Use a Binance spot symbol such as BTCUSDT (5-20 letters or digits)."
    elif problem := symbols.refusal(symbol):
        errors["symbol"] = problem
    return symbol


def _condition(value, errors):
    name = value.strip().lower().replace("-", "_") if isinstance(value, str) else ""
    name = ALIASES.get(name, name)
    if name not in CONDITIONS:
        errors["type"] = f"Choose one of {', '.join(CONDITIONS)}."
    return name


def _buffer(value, text_ok, errors):
    """(buffer, is_pct): absolute in the quote currency, or a percentage like '0.1%'."""
    if value is None or value == "":
        return DEFAULT_BUFFER, False
    if isinstance(value, str) and value.strip().endswith("%"):
        text = value.strip()[:-1].strip()
        pct = float(text) if NUMBER_RE.fullmatch(text) else math.nan
        if 0 < pct <= MAX_BUFFER_PCT:
            return pct, True
        errors["buffer"] = f"A percentage buffer must be above 0% and at most {MAX_BUFFER_PCT}%."
        return None, True
    number, problem = _number(value, text_ok)
    if problem:
        errors["buffer"] = f"{problem} A buffer is an amount (e.g. 0.5) or a percentage (0.1%)."
    return number, False


def _points(value, text_ok, pct, errors):
    """A move alert's buffer in percentage points: 0.5 and "0.5%" alike; below `pct`."""
    if isinstance(value, str) and value.strip().endswith("%"):
        value = value.strip()[:-1]
        text_ok = True  # "0.5%" is a string by nature
    points, problem = _number(value, text_ok, example="0.5")
    if problem:
        errors["buffer"] = f"{problem} A move's buffer is in percentage points, e.g. 0.5."
    elif pct is not None and points >= pct:
        errors["buffer"] = (f"A move's buffer is in percentage points of the move: give less "
                            f"than pct ({alert_index.fmt_num(pct)}).")
    return points


def _expiry(value, now, errors):
    if value is None or value == "":
        return None
    try:
        when = datetime.fromisoformat(value.strip())
        if when.tzinfo is not None:  # stored as naive UTC, like every datetime here
            when = when.astimezone(UTC).replace(tzinfo=None)
    except (AttributeError, TypeError, ValueError, OverflowError):
        errors["expires_at"] = "Give a date and time in ISO 8601, e.g. 2030-01-31T18:00:00Z."
        return None
    if when <= now:
        errors["expires_at"] = "The expiry must be in the future."
    return when


def _surrogates(value):
    return not value.isascii() and any(0xD800 <= ord(ch) <= 0xDFFF for ch in value)


def _note(value, errors):
    if value is None:
        return ""
    if not isinstance(value, str) or any(ord(ch) < 32 for ch in value):
        errors["note"] = "A note is a single line of text."
        return ""
    if _surrogates(value):
        errors["note"] = "A note must be text: a lone UTF-16 surrogate is not a character."
        return ""
    if len(value.strip()) > NOTE_MAX:
        errors["note"] = f"Keep the note to {NOTE_MAX} characters at most."
    return value.strip()


def _message(value, errors):
    """Plain text, lines and tabs allowed (a textarea sends CRLF: kept as LF)."""
    if value is None:
        return ""
    text = value.replace("\r\n", "\n").replace("\r", "\n") if isinstance(value, str) else None
    if text is None or any(ord(ch) < 32 and ch not in "\n\t" or ord(ch) == 127 for ch in text):
        errors["message"] = "A message is plain text: lines and tabs, no other control characters."
        return ""
    if _surrogates(text):
        errors["message"] = "A message must be text: a lone UTF-16 surrogate is not a character."
        return ""
    if len(text.strip()) > MESSAGE_MAX:
        errors["message"] = f"Keep the message to {MESSAGE_MAX} characters at most."
    return text.strip()


def _mode(value, errors):
    mode = (value or "once").strip().lower() if isinstance(value, str | None) else ""
    if mode not in MODES:
        errors["mode"] = "Choose once or recurring."
    return mode


def _cooldown(value, text_ok, errors):
    """Whole seconds, 0 (the default) to 30 days."""
    if not given(value, text_ok):
        return 0
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value, re.ASCII):
        if not text_ok:
            errors["cooldown_s"] = f"Send a JSON number ({value.strip()}), not a string."
            return 0
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        errors["cooldown_s"] = "Give a whole number of seconds, e.g. 300."
    elif value < 0:
        errors["cooldown_s"] = "A cooldown cannot be negative: give 0 for none."
    elif value > MAX_COOLDOWN_S:
        errors["cooldown_s"] = f"Keep the cooldown to 30 days ({MAX_COOLDOWN_S} s) at most."
    else:
        return value
    return 0


def _window(value, errors):
    seconds = WINDOWS.get(value.strip().lower()) if isinstance(value, str) else None
    if seconds is None:
        required = "Required: c" if value is None or value == "" else "C"
        errors["window"] = f"{required}hoose a window: one of {', '.join(WINDOWS)}."
    return seconds


def _pct(value, kind, text_ok, errors):
    pct, problem = _number(value, text_ok, example="2.5")
    if problem == TOO_BIG or (pct is not None and pct > MAX_PCT):
        errors["pct"] = f"Give a percentage above 0 and at most {MAX_PCT}."
        return None
    if problem:
        errors["pct"] = problem
    elif kind == "pct_down" and pct >= 100:
        errors["pct"] = "A price cannot fall 100% or more: give a pct below 100."
        return None
    return pct


def _level(data, kind, text_ok, errors):
    """The kind's own fields as the model's target, high and window_s."""
    fields = {"target": None, "high": None, "window_s": None}
    if family(kind) == "pct":
        fields["target"] = _pct(data.get("pct"), kind, text_ok, errors)
        fields["window_s"] = _window(data.get("window"), errors)
        return fields
    names = KINDS[kind]  # ("price",) or ("low", "high")
    values = {}
    for name in names:
        values[name], problem = _number(data.get(name), text_ok)
        if problem:
            errors[name] = problem
    fields["target"], fields["high"] = values[names[0]], values.get("high")
    if fields["high"] is not None and fields["target"] is not None and (
            fields["target"] >= fields["high"]):
        errors["high"] = "high must be above low."
    return fields


def given(value, text_ok):
    """Whether a field was sent: the form sends its empty fields too."""
    return value is not None and not (text_ok and isinstance(value, str) and not value.strip())


def _foreign(data, kind, text_ok, errors):
    """Fields of other kinds (named as sent) are refused, not ignored."""
    takes = " and ".join(KINDS[kind])
    for name in (*KIND_FIELDS, "target"):
        if FIELD_ALIASES.get(name, name) not in KINDS[kind] and given(data.get(name), text_ok):
            errors[name] = f"{name} does not apply to type {kind}: it takes {takes}."


def canonical(data):
    """The input with the model's names for fields (condition, target) as the API's."""
    out = dict(data)
    for alias, name in FIELD_ALIASES.items():
        if alias in out:
            value = out.pop(alias)
            out.setdefault(name, value)
    return out


def validate(data, text_numbers=False, now=None):
    """Check an alert's fields (API names); returns the model's fields or raises InvalidInput."""
    if not isinstance(data, dict):
        raise InvalidInput({"body": "Send a JSON object."})
    errors = {}
    raw, data = data, canonical(data)
    fields = {
        "symbol": _symbol(data.get("symbol"), errors),
        "condition": _condition(data.get("type"), errors),
        "mode": _mode(data.get("mode"), errors),
        "cooldown_s": _cooldown(data.get("cooldown_s"), text_numbers, errors),
        "expires_at": _expiry(data.get("expires_at"), now or utcnow(), errors),
        "note": _note(data.get("note"), errors),
        "message": _message(data.get("message"), errors),
    }
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


def _kind_buffer(value, fields, text_ok, errors):
    """(buffer, is_pct) as the kind reads it; a channel takes one that does not apply."""
    is_given = given(value, text_ok)
    if family(fields["condition"]) == "pct":
        if not is_given:
            _check_default_points(fields, errors)
            return DEFAULT_BUFFER, False
        return _points(value, text_ok, fields["target"], errors), False
    buffer = _buffer(value if is_given else None, text_ok, errors)
    if family(fields["condition"]) == "price" and "buffer" not in errors:
        _check_rearm({**fields, "buffer": buffer[0], "buffer_is_pct": buffer[1]}, errors,
                     is_given)
    return buffer


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


def validate_changes(alert, changes, text_numbers=False, now=None):
    """A PATCH: `changes` laid over the alert's fields, checked as a new alert's are.

    A new type keeps the level fields it takes too (above -> crossing_up keeps the price),
    and the buffer unless its unit changes (a move's is in points). An expiry the PATCH
    does not name stands, passed or not.
    """
    if not isinstance(changes, dict):
        raise InvalidInput({"body": "Send a JSON object."})
    editable = (*COMMON, *KIND_FIELDS)
    errors = {name: f"{name} is not a field you can change: send any of {', '.join(editable)}."
              for name in sorted(set(changes) - set(editable) - set(FIELD_ALIASES))}
    changes = canonical(changes)
    merged = as_input(alert)
    kind = _condition(changes.get("type", alert.condition), {})
    if kind in KINDS and kind != alert.condition:
        for name in set(KIND_FIELDS) - set(KINDS[kind]):
            merged.pop(name, None)
        if alert.condition not in KINDS or _in_points(kind) != _in_points(alert.condition):
            merged.pop("buffer")  # an amount never becomes points, nor points an amount
    merged.update(changes)
    try:
        fields = validate(merged, text_numbers, now)
    except InvalidInput as exc:
        errors.update(exc.errors)
    if errors:
        raise InvalidInput(errors)
    if "expires_at" not in changes:
        fields["expires_at"] = alert.expires_at
    return fields
