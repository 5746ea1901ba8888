"""An alert's `message`: a template of the notification's text, checked when saved and
rendered for the external channels (email, SMS, push, destinations) when it fires.

The inbox and the live feed keep the matcher's own wording: rendering stays off the hot path.

The sandbox goes further than Jinja's own: only the placeholders, a few filters and
harmless string methods; no loops, assignments or macros; no integer powers (`**` is a
float's), `%` formatting or repetition that would build a huge string. A template is at
most 500 characters, so with those gone its cost is bounded by its length.
"""

import logging
import operator
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from webapp import clock
from webapp.core import logs
from webapp.extensions import db
from webapp.models import Alert, row_id

PLACEHOLDERS = ("symbol", "price", "target", "condition", "time", "note", "pct", "window")
MAX_OUTPUT = 1000
FILTERS = ("abs", "capitalize", "d", "default", "float", "int", "length", "lower", "round",
           "string", "title", "trim", "truncate", "upper")
STR_METHODS = frozenset({"capitalize", "endswith", "lower", "lstrip", "rstrip", "startswith",
                         "strip", "title", "upper"})
ALLOWED_STATEMENTS = (nodes.Output, nodes.If)
TAGS = {"Assign": "set", "AssignBlock": "set", "CallBlock": "call", "FilterBlock": "filter",
        "FromImport": "from", "Scope": "autoescape"}  # the rest: as named
SAMPLE_TIME = "2030-01-31T18:00:00.000Z"
HINT = "Placeholders: " + ", ".join(f"{{{{ {name} }}}}" for name in PLACEHOLDERS) + "."

log = logging.getLogger(__name__)


class MessageSandbox(SandboxedEnvironment):
    """Jinja's sandbox, narrowed to what a line of text needs."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def is_safe_attribute(self, obj, attr, value):
        return isinstance(obj, str) and attr in STR_METHODS

    def wrap_str_format(self, value):
        return None  # str.format is refused like any other attribute, widths and all

    def call_binop(self, context, op, left, right):
        if op == "**":  # a float power overflows at once; an int one could run for ever
            return float(left) ** float(right)
        if op == "%" and isinstance(left, str):
            raise SecurityError("% formatting is not available: use the round filter")
        if op == "*" and (isinstance(left, list | tuple) or isinstance(right, list | tuple)):
            raise SecurityError("repeating a list is not available")  # [[x] * n] * n nests
        if op == "*":
            for text, times in ((left, right), (right, left)):
                if isinstance(text, str) and isinstance(times, int) and (
                        len(text) * times > MAX_OUTPUT):
                    raise SecurityError(f"repeating makes over {MAX_OUTPUT} characters")
        return {"*": operator.mul, "%": operator.mod}[op](left, right)


MAX_PRECISION = 20  # round's digits either side: 10**n for a huge n would run for hours


def _bounded_round(jinja_round):
    def round_(value, precision=0, method="common"):
        if not isinstance(precision, int) or abs(precision) > MAX_PRECISION:
            raise SecurityError(f"round takes a precision from -{MAX_PRECISION} to "
                                f"{MAX_PRECISION}")
        return jinja_round(value, precision, method)
    return round_


def _environment():
    env = MessageSandbox(autoescape=False, undefined=StrictUndefined, keep_trailing_newline=True)
    env.filters = {name: env.filters[name] for name in FILTERS}
    env.filters["round"] = _bounded_round(env.filters["round"])
    env.globals = {}
    return env


ENV = _environment()


@lru_cache(maxsize=512)
def _compile(text):
    """The template for `text`, or TemplateError saying why it cannot be one."""
    tree = ENV.parse(text)
    for node in tree.find_all(nodes.Stmt):
        if not isinstance(node, ALLOWED_STATEMENTS):
            tag = TAGS.get(type(node).__name__, type(node).__name__.lower())
            raise TemplateError(f"{{% {tag} %}} is not available: only {{% if %}} blocks and "
                                "placeholders are")
    # `self` is Jinja's own and never counted as undeclared: every name must be ours
    names = meta.find_undeclared_variables(tree) | {n.name for n in tree.find_all(nodes.Name)}
    unknown = sorted(names - set(PLACEHOLDERS))
    if unknown:
        raise TemplateError(f"unknown placeholder {unknown[0]}")
    return ENV.from_string(tree)


def _render(template, values):
    out, size = [], 0
    for chunk in template.generate(**values):
        out.append(chunk)
        size += len(chunk)
        if size > MAX_OUTPUT:
            break
    return "".join(out)[:MAX_OUTPUT].strip()


def sample(kind, note="", symbol="BTCUSDT"):
    """Values a template is tried with when saved: those a notification of `kind` carries."""
    move = kind in ("pct_up", "pct_down")
    return {"symbol": symbol or "BTCUSDT", "price": 65000.5, "target": 2.5 if move else 65000,
            "condition": kind or "above", "time": SAMPLE_TIME, "note": note or "",
            "pct": 2.51 if move else "", "window": "1h" if move else ""}


def problem(text, values):
    """What is wrong with `text` as a template, tried with `values`; None when nothing is."""
    if "{" not in text:
        return None  # plain text: nothing to render
    try:
        _render(_compile(text), values)
    except TemplateError as exc:  # SecurityError and UndefinedError are TemplateErrors
        line = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        return f"The message template does not work: {exc.message.rstrip('.')}{line}. {HINT}"
    except Exception as exc:  # noqa: BLE001 - e.g. {{ price / 0 }}: any error is the template's
        return (f"The message template fails with the sample values: "
                f"{type(exc).__name__}: {exc}"[:300])
    return None


def values(notification):
    """The placeholders' values from a fired notification (worker/match/notify.lua's `data`)."""
    data = notification.get("data") or {}
    move = data.get("move_pct")
    return {"symbol": data.get("symbol", ""), "price": data.get("price", ""),
            "target": data.get("target", ""), "condition": data.get("condition", ""),
            "time": clock.ms_to_iso(notification["created_at"]), "note": data.get("note", ""),
            "pct": "" if move is None else round(move, 2), "window": data.get("window", "")}


def render(text, notification):
    """The alert's message for this notification; None when it cannot be rendered."""
    if "{" not in text:
        return text
    try:
        return _render(_compile(text), values(notification))
    except Exception as exc:  # noqa: BLE001 - firing never fails on a template
        logs.event(log, "alert_message_failed", logging.WARNING,
                   alert_id=notification.get("alert_id"), notification_id=notification.get("id"),
                   error=logs.error_text(exc, 500))
        return None


def personalise(notification):
    """The notification with its alert's message as its text, for the external channels.

    Unchanged when the alert has no message, is gone, or its template fails (logged): the
    standard text goes out instead.
    """
    alert_id = row_id(notification.get("alert_id"))
    if alert_id is None:
        return notification
    alert = db.session.get(Alert, alert_id)
    if alert is None or not alert.message or alert.user_id != int(notification["user_id"]):
        return notification
    text = render(alert.message, notification)
    return {**notification, "message": text} if text else notification
