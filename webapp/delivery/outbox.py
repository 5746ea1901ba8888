"""The local outbox: a provider that is not configured writes each message to a file."""

import os
from pathlib import Path

from flask import current_app

from webapp import clock


def directory():
    path = Path(current_app.instance_path) / "outbox"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write(log_id, channel, body, extension):
    """Write one message atomically; return the file name (kept as the provider id)."""
    name = f"{clock.utcnow():%Y%m%dT%H%M%S}-{log_id}-{channel}.{extension}"
    target = directory() / name
    temporary = target.with_suffix(".tmp")
    temporary.write_bytes(body)
    os.replace(temporary, target)
    return name
