"""One field of a destination at a time: checked, cleaned, and the URL masked for showing."""

import unicodedata
from urllib.parse import urlsplit

from flask import current_app

from webapp.core import addresses
from webapp.delivery.channels.destination import apprise_plugin, apprise_refusal
from webapp.exceptions import InvalidInput
from webapp.notify import types as notification_types

KINDS = ("apprise", "webhook")
NAME_MAX = 80
URL_MAX = 2000
SECRET_MIN, SECRET_MAX = 16, 200
MASK_MAX = 120  # the column holds 200; a masked Apprise URL carries every default option


def _bad_chars(text, categories):
    return any(unicodedata.category(c)[0] in categories or unicodedata.category(c) in categories
               for c in text)


def kind(value):
    if value not in KINDS:
        raise InvalidInput({"kind": f"Choose one of: {', '.join(KINDS)}."})
    return value


def name(value):
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput({"name": "Give the destination a name."})
    value = value.strip()
    if len(value) > NAME_MAX:
        raise InvalidInput({"name": f"Use at most {NAME_MAX} characters."})
    # Cc control, Cf format (bidi overrides), Cs lone surrogates: none belong in a label.
    if _bad_chars(value, {"Cc", "Cf", "Cs"}):
        raise InvalidInput({"name": "Control characters are not allowed in a name."})
    return value


def url(kind_, value):
    """The URL, checked for its kind and refused if it aims at a private address."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput({"url": "Enter the destination's URL."})
    value = value.strip()
    if len(value) > URL_MAX:
        raise InvalidInput({"url": f"Use at most {URL_MAX} characters."})
    if _bad_chars(value, {"C", "Z"}):
        raise InvalidInput({"url": "A URL has no spaces or control characters."})
    refused = _apprise_url(value) if kind_ == "apprise" else _webhook_url(value)
    if refused:
        raise InvalidInput({"url": refused})
    return value


def _apprise_url(value):
    plugin = apprise_plugin(value)
    if plugin is None:
        return "Apprise does not understand this URL (see its list of services)."
    return apprise_refusal(plugin)


def _webhook_url(value):
    allow_http = current_app.config["DESTINATIONS_ALLOW_PRIVATE"]
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return "This is not a valid URL."
    if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
        return "A webhook URL starts with https://."
    if not parts.hostname:
        return "The URL needs a host name."
    if port == 0:
        return "Port 0 cannot be reached: leave the port out for https's own (443)."
    if parts.username is not None or parts.password is not None:
        return "Leave credentials out of the URL: the signature authenticates each request."
    return addresses.refusal(parts.hostname, port or (443 if parts.scheme == "https" else 80))


def secret(kind_, value):
    """A webhook's signing secret; None asks for a generated one."""
    if value is None or value == "":
        return None
    if kind_ != "webhook":
        raise InvalidInput({"secret": "Only webhooks take a secret."})
    if not isinstance(value, str):
        raise InvalidInput({"secret": "The secret is text."})
    if not SECRET_MIN <= len(value) <= SECRET_MAX:
        raise InvalidInput({"secret": f"Use {SECRET_MIN} to {SECRET_MAX} characters."})
    if _bad_chars(value, {"C", "Z"}):
        raise InvalidInput({"secret": "No spaces or control characters in the secret."})
    return value


def types(value):
    """None (what the real-time toggles let out) or a non-empty list of known type names."""
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        raise InvalidInput({"types": "Send null or a non-empty list of notification types."})
    unknown = [t for t in value if notification_types.get(t) is None]
    if unknown:
        raise InvalidInput({"types": f"Unknown type: {unknown[0][:40]!r}."})
    return sorted(set(value))


def flag(field, value):
    if not isinstance(value, bool):
        raise InvalidInput({field: "Send true or false."})
    return value


def masked(kind_, value):
    """What is shown of a URL: Apprise's own private form, or a webhook's scheme and host."""
    if kind_ == "apprise":
        return _masked_apprise(apprise_plugin(value).url(privacy=True))
    parts = urlsplit(value)
    host = parts.netloc.rpartition("@")[2]
    tail = "/…" if parts.path.strip("/") or parts.query else "/"
    return f"{parts.scheme}://{host}{tail}"[:MASK_MAX]


def _masked_apprise(private_url):
    """Apprise's private form hides passwords and the tokens it knows, but not a path (a
    json:// hook's secret) or an ntfy topic in the host's place: keep the scheme and a
    server's name (or Apprise's own mask of a token); of anything else, two characters."""
    scheme, _, rest = private_url.partition("?")[0].partition("://")
    host = rest.split("/", 1)[0].rpartition("@")[2]
    shown = host if "." in host or ":" in host else host[:2] + "…"  # "1...C": Apprise's mask
    return f"{scheme}://{shown}/…"[:MASK_MAX]
