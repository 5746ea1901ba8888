"""A traceback a supervised process printed raw (not through logging: a forked RQ scheduler
dying with Redis), told apart and written as one JSON log record under LOG_FORMAT=json."""

import logging
import re

from webapp.core import logs

TRACEBACK = "Traceback (most recent call last):"
QUIET_S = 0.5  # a traceback printed raw ends at the latest this long after its last line
# what a traceback printed raw starts with: its own first line, or what Python or
# multiprocessing put before it ("Process Scheduler:" for a forked RQ scheduler)
_OPENING = re.compile(r"Traceback \(most recent call last\):$|Exception in thread |"
                      r"Exception ignored in|Process [\w.:-]+:$")


def opens(line):
    return _OPENING.match(line) is not None


def record(name, lines, pid):
    """One ERROR record as a JSON line: the exception's line (the first unindented one after
    the last "Traceback" line) as its message, every line in `exc`."""
    starts = [i for i, line in enumerate(lines) if line.startswith(TRACEBACK)]
    after = lines[starts[-1] + 1:] if starts else lines
    message = next((line for line in after if line and not line[0].isspace()),
                   next((line for line in reversed(lines) if line.strip()), ""))
    entry = logging.LogRecord(name, logging.ERROR, "", 0, message, None, None)
    entry.exc_text, entry.process = "\n".join(lines).rstrip("\n"), pid
    return logs.JsonFormatter(name).format(entry)
