"""Flask-SSE 1.0 as its README sets it up, for bench/sse_fanout.py (runs in .venv-flasksse)."""

import os

from flask import Flask
from flask_sse import sse

app = Flask(__name__)
app.config["REDIS_URL"] = os.environ["REDIS_URL"]
app.register_blueprint(sse, url_prefix="/stream")
