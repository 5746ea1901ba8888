"""What a webhook's body says: TradingView's text or JSON, read into a notification's fields.

TradingView sends `application/json` only when the alert's text is valid JSON, and
`text/plain` otherwise; other senders forget the header, so a text body that is a JSON object
is read as one too. A text body that only looks like JSON stays text: it is still a message.
"""

import json
import math

from webapp.core import text
from webapp.exceptions import InvalidInput
from webapp.notify.types import PRIORITIES

TITLE_MAX, MESSAGE_MAX = 200, 2000  # the inbox's limits
SYMBOL_MAX = 64  # room for TradingView's `{{exchange}}:{{ticker}}`
DATA_MAX = 8 * 1024  # bytes of JSON kept beside the message
KNOWN = ("title", "message", "priority", "symbol", "price")


class BadBody(ValueError):
    """Not text at all (bad UTF-8), or JSON announced by its content type that is not JSON."""


def read(content_type, raw):
    """The notification's title, message, priority and data; BadBody or InvalidInput."""
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadBody("Send the body as UTF-8 text.") from None
    if not text.cleaned(body).strip():  # nothing, or nothing but control characters
        raise InvalidInput({"body": "The body is empty: send the alert's text or JSON."})
    announced = content_type == "application/json" or content_type.endswith("+json")
    if announced or body.lstrip().startswith("{"):
        fields, why = _json_object(body)
        if isinstance(fields, dict):
            return from_json(fields)
        if announced:
            raise BadBody(why or "The body is not a JSON object; send one, or send text/plain.")
    return {"title": "", "message": _cut(text.cleaned(body).strip(), MESSAGE_MAX), "priority": None,
            "data": {}}


def _json_object(text):
    """(the parsed JSON, None), or (None, why not) when it is not JSON we can keep."""
    try:
        return json.loads(text, parse_constant=_refuse, parse_float=_finite), None
    except RecursionError:
        return None, "The JSON is nested too deeply."
    except json.JSONDecodeError:
        return None, None  # not JSON at all: said as "not a JSON object"
    except ValueError as exc:  # NaN, 1e999
        return None, f"The body's JSON holds {exc}."


def _refuse(name):
    raise ValueError(f"{name} is not a number JSON can carry")


def _finite(text):
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is too large a number")
    return number


def from_json(fields):
    """Named fields to their places; every other one (TradingView's `type` too) into data."""
    errors = {}
    _check_unicode(fields, errors)
    title = " ".join(_text(fields, "title", errors).split())
    message = _text(fields, "message", errors).strip()
    data = {k: v for k, v in fields.items() if k not in KNOWN}
    symbol = _symbol(fields.get("symbol"), errors)
    if symbol:
        data["symbol"] = symbol
    price = _price(fields.get("price"), errors)
    if price is not None:
        data["price"] = price
    priority = _priority(fields.get("priority"), errors)
    _check_data(data, errors)
    if errors:
        raise InvalidInput(errors)
    return {"title": _cut(title, TITLE_MAX), "message": _cut(message, MESSAGE_MAX),
            "priority": priority, "data": data}


def _text(fields, name, errors):
    value = fields.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        errors[name] = "Must be a string."
        return ""
    return value


def _cut(value, limit):
    """Long text is cut rather than refused, and control characters dropped: a chart alert's
    sender cannot read our answer."""
    value = text.cleaned(value)
    return value if len(value) <= limit else value[:limit - 1] + "…"


def _symbol(value, errors):
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or len(value.strip()) > SYMBOL_MAX:
        errors["symbol"] = f"A string of at most {SYMBOL_MAX} characters, e.g. BTCUSDT."
        return ""
    return value.strip()


def _price(value, errors):
    """A finite number, or a string of one (TradingView's `{{close}}` arrives quoted)."""
    if value is None or value == "":
        return None
    number = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = value if isinstance(value, float) or abs(value) < 2**53 else None
    elif isinstance(value, str) and len(value) <= 40:
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        errors["price"] = "A number, or a string holding one (e.g. \"65012.5\")."
        return None
    return number


def _priority(value, errors):
    if value is None or value == "":
        return None
    priority = value.strip().lower() if isinstance(value, str) else None
    if priority not in PRIORITIES:
        errors["priority"] = f"One of {', '.join(PRIORITIES)}."
    return priority


def _check_unicode(fields, errors):
    """JSON lets an escaped lone UTF-16 surrogate through; no store can hold one."""
    try:
        json.dumps(fields, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        errors["body"] = "Text must be valid Unicode: a lone UTF-16 surrogate is not a character."


def _check_data(data, errors):
    if "body" not in errors and len(json.dumps(data).encode()) > DATA_MAX:
        errors["data"] = f"The other fields take at most {DATA_MAX} bytes of JSON."
