"""One alert field at a time: each check reads a value as sent (JSON or form text) and
returns what the model stores, putting what is wrong with it in `errors` under its name.

validation.py assembles an alert of a kind from these.
"""

import math
import re
from datetime import UTC, datetime

from webapp.alerts import index as alert_index
from webapp.core.text import is_line, is_text
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
WINDOWS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "24h": 86400}
# Names a client written for the brief may send for `type`, beside our own.
ALIASES = {
    "price_above": "above", "price_below": "below", "volume": "volume_above",
    "volume_alert": "volume_above", "price_alert_above": "above", "price_alert_below": "below",
}


def given(value, text_ok):
    """Whether a field was sent: the form sends its empty fields too."""
    return value is not None and not (text_ok and isinstance(value, str) and not value.strip())


def number(value, text_ok, example="65000"):
    """(float, None) for a finite number in (0, 10^15), else (None, what is wrong with it)."""
    # Form text may group thousands as people write them (65,000.5); the JSON API wants
    # numbers, and says so when it gets a string that holds one.
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


def symbol(value, errors):
    """The symbol upper-cased, if it is one Binance lists and we may watch."""
    name = value.strip().upper() if isinstance(value, str) else ""
    if not SYMBOL_RE.fullmatch(name):
        errors["symbol"] = "Use a Binance spot symbol such as BTCUSDT (5-20 letters or digits)."
    elif problem := symbols.refusal(name):
        errors["symbol"] = problem
    return name


def condition(value, kinds, errors):
    """The type as one of `kinds` spells it: any case, dashes for underscores, aliases read."""
    name = value.strip().lower().replace("-", "_") if isinstance(value, str) else ""
    name = ALIASES.get(name, name)
    if name not in kinds:
        errors["type"] = f"Choose one of {', '.join(kinds)}."
    return name


def buffer(value, text_ok, errors):
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
    amount, problem = number(value, text_ok)
    if problem:
        errors["buffer"] = f"{problem} A buffer is an amount (e.g. 0.5) or a percentage (0.1%)."
    return amount, False


def points(value, text_ok, pct, errors):
    """A move alert's buffer in percentage points: 0.5 and "0.5%" alike; below `pct`."""
    if isinstance(value, str) and value.strip().endswith("%"):
        value = value.strip()[:-1]
        text_ok = True  # "0.5%" is a string by nature
    read, problem = number(value, text_ok, example="0.5")
    if problem:
        errors["buffer"] = f"{problem} A move's buffer is in percentage points, e.g. 0.5."
    elif pct is not None and read >= pct:
        errors["buffer"] = (f"A move's buffer is in percentage points of the move: give less "
                            f"than pct ({alert_index.fmt_num(pct)}).")
    return read


def expiry(value, now, errors):
    """An ISO 8601 time after `now`, as naive UTC; None when not given."""
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


def surrogates(value):
    """Whether text holds a lone UTF-16 surrogate (JSON can send one; no database stores it)."""
    return not value.isascii() and any(0xD800 <= ord(ch) <= 0xDFFF for ch in value)


def note(value, errors):
    """One line of text, stripped, at most NOTE_MAX characters."""
    if value is None:
        return ""
    if not isinstance(value, str):
        errors["note"] = "A note is a single line of text."
        return ""
    if surrogates(value):
        errors["note"] = "A note must be text: a lone UTF-16 surrogate is not a character."
        return ""
    if not is_line(value):
        errors["note"] = "A note is a single line of text, without control characters."
        return ""
    if len(value.strip()) > NOTE_MAX:
        errors["note"] = f"Keep the note to {NOTE_MAX} characters at most."
    return value.strip()


def message(value, errors):
    """Text, lines and tabs allowed (a textarea sends CRLF: kept as LF); its template is
    checked with the alert's kind (messages.problem)."""
    if value is None:
        return ""
    text = value.replace("\r\n", "\n").replace("\r", "\n") if isinstance(value, str) else None
    if text is not None and surrogates(text):
        errors["message"] = "A message must be text: a lone UTF-16 surrogate is not a character."
        return ""
    if text is None or not is_text(text):
        errors["message"] = ("A message is plain text: lines and tabs, no other control "
                             "characters and no direction override (U+202D, U+202E).")
        return ""
    if len(text.strip()) > MESSAGE_MAX:
        errors["message"] = f"Keep the message to {MESSAGE_MAX} characters at most."
    return text.strip()


def mode(value, errors):
    """once (the default) or recurring."""
    name = (value or "once").strip().lower() if isinstance(value, str | None) else ""
    if name not in MODES:
        errors["mode"] = "Choose once or recurring."
    return name


def cooldown(value, text_ok, errors):
    """Whole seconds, 0 (the default) to 30 days."""
    if not given(value, text_ok):
        return 0
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value, re.ASCII):
        if not text_ok:
            errors["cooldown_s"] = f"Send a JSON number ({value.strip()[:20]}), not a string."
            return 0
        if len(value.strip().lstrip("+-").lstrip("0")) > 12:  # int() refuses 4,300 digits
            errors["cooldown_s"] = f"Keep the cooldown to 30 days ({MAX_COOLDOWN_S} s) at most."
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


def window(value, errors):
    """A move's window (one of WINDOWS' names) in seconds."""
    seconds = WINDOWS.get(value.strip().lower()) if isinstance(value, str) else None
    if seconds is None:
        required = "Required: c" if value is None or value == "" else "C"
        errors["window"] = f"{required}hoose a window: one of {', '.join(WINDOWS)}."
    return seconds


def pct(value, kind, text_ok, errors):
    """A move's size in percent: above 0, at most MAX_PCT, and below 100 for a fall."""
    size, problem = number(value, text_ok, example="2.5")
    if problem == TOO_BIG or (size is not None and size > MAX_PCT):
        errors["pct"] = f"Give a percentage above 0 and at most {MAX_PCT}."
        return None
    if problem:
        errors["pct"] = problem
    elif kind == "pct_down" and size >= 100:
        errors["pct"] = "A price cannot fall 100% or more: give a pct below 100."
        return None
    return size
