"""The framework floor for bench/events.py: a bare Flask JSON endpoint, nothing else, served
by the same gunicorn gevent worker as the app."""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/api/v1/events")
def events():
    body = request.get_json()
    return jsonify({"accepted": 1, "rejected": 0, "ids": [], "title": body.get("title")}), 202
