"""Logging for every process, set up in one place: `configure(config, role)` at each start.

LOG_FORMAT=text (the default) keeps the familiar `time LEVEL logger message` lines;
LOG_FORMAT=json writes one JSON object a line, for a log shipper. Either way each line knows
its request id: the web side takes a sane `X-Request-ID` or makes one, RQ jobs carry it in
their meta (webapp/core/queues.py), and the slow path derives one per fired batch, so one id
follows a notification from the POST or the tick to each of its deliveries.
"""

import atexit
import contextvars
import json
import logging
import os
import re
import sys
import uuid
from datetime import UTC, datetime

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
FORMATS = ("text", "json")
HEADER = "X-Request-ID"
META_KEY = "request_id"  # where an RQ job keeps the id of what queued it
SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # a caller's id, kept only when it fits this
# What every LogRecord has: the rest of a record's attributes are a call's `extra` fields.
STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}

_request_id = contextvars.ContextVar("request_id", default=None)


def configure(config, role):
    """Send every logger's lines to stdout in LOG_FORMAT, tagged with the process's role."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter(config, role))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # without a handler of its own, warnings.warn would print plain text to stderr
    logging.captureWarnings(True)
    return handler


def json_from_the_start(environ=os.environ, argv=sys.argv, lines=True):
    """LOG_FORMAT=json from a process's first line, before `configure` is reached: a start
    that fails (a setting refused, a broken import) is one JSON record, not a traceback, and
    each line anything writes to stderr is one record too (gunicorn repeats a worker's
    failure there). `make run` wraps stray lines itself; a process run on its own (systemd,
    docs/operations.md) needs this. Called first thing in wsgi.py, and by gunicorn.conf.py
    for the arbiter, whose own log handlers write to stderr: not `lines`, or they would be
    wrapped twice."""
    if (environ.get("LOG_FORMAT") or "").lower() != "json":
        return
    named = [arg for arg in argv[1:] if arg in ROLES]
    role = named[0] if named else "web" if "gunicorn" in argv[0] else "cli"
    formatter, stream = JsonFormatter(role), sys.stderr

    def failed(kind, value, tb):
        record = logging.LogRecord("tickerbell", logging.CRITICAL, "", 0, "%s",
                                   (error_text(value),), (kind, value, tb))
        stream.write(formatter.format(record) + "\n")
        stream.flush()

    sys.excepthook = failed
    # under `make run` (which names each process) the launcher wraps lines itself; a command
    # typed in a shell (`flask shell`: its prompt is written to stderr) is a person's
    if lines and role != "cli" and not environ.get("TICKERBELL_PROCESS"):
        sys.stderr = _JsonLines(stream, formatter)
        atexit.register(sys.stderr.close_held)


ROLES = ("worker", "listener", "scheduler")
TRACEBACK = "Traceback (most recent call last):"
# what a traceback printed raw starts with: its own first line, or what Python, threading or
# multiprocessing put before it ("Process Scheduler:" for a forked RQ scheduler)
_OPENING = re.compile(r"Traceback \(most recent call last\):$|Exception in thread |"
                      r"Exception ignored in|Process [\w.:-]+:$")
_CHAINED = ("During handling of the above exception", "The above exception was the direct")


def opens_traceback(line):
    return _OPENING.match(line) is not None


def traceback_record(name, lines, pid=None):
    """One ERROR record of a traceback printed raw: the exception's line (the first unindented
    one after the last "Traceback" line) its message, every line in `exc`."""
    starts = [i for i, line in enumerate(lines) if line.startswith(TRACEBACK)]
    after = lines[starts[-1] + 1:] if starts else lines
    message = next((line for line in after if line and not line[0].isspace()),
                   next((line for line in reversed(lines) if line.strip()), ""))
    record = logging.LogRecord(name, logging.ERROR, "", 0, "%s", (message,), None)
    record.exc_text = "\n".join(lines).rstrip("\n")
    if pid is not None:
        record.process = pid
    return record


class _JsonLines:
    """A text stream each of whose lines becomes a JSON record (level ERROR, logger stderr),
    but a traceback (a thread's, a forked process's, gevent's) one record, to its exception's
    line: as it is written, not when something follows (a chained one, "During handling of
    the above exception", is a record a part)."""

    HELD_MAX = 1000  # lines: a traceback never ended is let go in pieces

    def __init__(self, stream, formatter):
        self.stream, self.formatter, self.partial, self.held = stream, formatter, "", []

    def write(self, text):
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            self._line(line)
        return len(text)

    def _line(self, line):
        if self.held:
            self.held.append(line)
            past_frames = any(held.startswith(TRACEBACK) for held in self.held)
            if (past_frames and line and not line[0].isspace() and not opens_traceback(line)
                    and not line.startswith(_CHAINED)) or len(self.held) >= self.HELD_MAX:
                self.close_held()
        elif opens_traceback(line) or line.startswith(_CHAINED):  # a chain: a record a part
            self.held = [line]
        elif line.strip():
            self._emit(logging.LogRecord("stderr", logging.ERROR, "", 0, "%s", (line,), None))

    def close_held(self):
        if self.held:
            held, self.held = self.held, []
            self._emit(traceback_record("stderr", held))

    def _emit(self, record):
        self.stream.write(self.formatter.format(record) + "\n")

    def flush(self):
        self.stream.flush()

    def __getattr__(self, name):  # fileno, isatty, encoding: the real stream's
        return getattr(self.stream, name)


def formatter(config, role):
    """The formatter LOG_FORMAT names; gunicorn's own loggers take it too (gunicorn.conf.py)."""
    if format_name(config) == "json":
        return JsonFormatter(role)
    return logging.Formatter(TEXT_FORMAT)


def format_name(config):
    """LOG_FORMAT, checked: a typo must not fall back to text silently."""
    kind = (config.get("LOG_FORMAT") or "text").lower()
    if kind not in FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(FORMATS)}, not {kind!r}")
    return kind


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, process, request id, the
    call's extra fields, and an exception's traceback in `exc` (never loose lines)."""

    def __init__(self, role):
        super().__init__()
        self.role = role

    def format(self, record):
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": os.environ.get("TICKERBELL_PROCESS") or self.role,
            "role": self.role,
            "pid": record.process,
            "request_id": getattr(record, "request_id", None) or current(),
        }
        entry.update((k, v) for k, v in vars(record).items()
                     if k not in STANDARD and k not in entry)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def event(logger, name, level=logging.INFO, **fields):
    """One event as a grep-able line, `event=name key=value ...`, its name and fields the
    record's own too, so LOG_FORMAT=json gives them as keys (a field named as a LogRecord
    attribute, `process` say, stays in the text only)."""
    parts = [f"event={name}"]
    for key, value in fields.items():
        if isinstance(value, float):
            value = f"{value:.2f}"
        elif isinstance(value, str) and (not value or not value.isprintable()
                                         or any(c in value for c in ' "=')):
            value = json.dumps(value)
        parts.append(f"{key}={value}")
    extra = {key: value for key, value in fields.items() if key not in STANDARD}
    logger.log(level, " ".join(parts), extra={"event": name, **extra})


def error_text(exc, limit=300):
    """An exception as a log field or a stored reason: its type and its first line."""
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:limit]


def current():
    """The request id of what runs now: the request's, the batch's, or the RQ job's (RQ
    keeps the running job in memory: no Redis call)."""
    found = _request_id.get()
    if found:
        return found
    # rq not imported means no job runs here; importing it would load redis into gunicorn's
    # master (which logs through this too) before gevent patches ssl in the workers
    rq_job = sys.modules.get("rq.job")
    job = rq_job.get_current_job() if rq_job is not None else None
    return job.meta.get(META_KEY) if job is not None else None


def bind(request_id):
    """Make `request_id` the current one; returns a token for `unbind`."""
    return _request_id.set(request_id)


def unbind(token):
    _request_id.reset(token)


def tick_id(symbol, ts_ms):
    """A fired batch's request id: the listener logs it, and the slow path derives the same
    one from the batch's entry (its symbol and tick time), so no id is stored to carry it."""
    return f"tick-{symbol}-{ts_ms}"


def accept(header_value):
    """The caller's id when it is sane (short, plain characters), else a new one."""
    if header_value and SANE_ID.fullmatch(header_value):
        return header_value
    return uuid.uuid4().hex


def init_app(app):
    """Each request gets its id before anything logs, and answers with it."""
    from flask import g, request

    @app.before_request
    def _take_request_id():
        g.request_id_token = bind(accept(request.headers.get(HEADER)))

    @app.after_request
    def _answer_request_id(response):
        response.headers[HEADER] = current() or ""
        return response

    @app.teardown_request
    def _drop_request_id(_exc):
        token = g.pop("request_id_token", None)
        if token is not None:
            unbind(token)
