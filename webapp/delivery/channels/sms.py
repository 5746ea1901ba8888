"""SMS through Twilio's REST API; TWILIO_API_BASE points the client elsewhere (tests)."""

import json

from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from webapp.delivery.channels.context import describe, one_line, retry_after_s
from webapp.exceptions import DeliveryRejected, RefusedForNow

MAX_LENGTH = 320  # two SMS segments


def configured(config):
    return all(config[k] for k in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM"))


def build(user, pref, notification):
    """The text of one notification, to the phone number in the user's settings."""
    if not pref.phone:
        raise DeliveryRejected("no phone number in the notification settings")
    label = describe(notification)["label"]
    body = one_line(f"Tickerbell {label}: {notification['title']}. {notification['message']}")
    ack = f" Ack: {notification['ack_url']}" if notification.get("ack_url") else ""
    return {"to": pref.phone, "body": body[:MAX_LENGTH - len(ack)] + ack}


def client(config, timeout):
    http = TwilioHttpClient(timeout=timeout)
    twilio = Client(config["TWILIO_ACCOUNT_SID"], config["TWILIO_AUTH_TOKEN"], http_client=http)
    if config["TWILIO_API_BASE"]:
        twilio.api.base_url = config["TWILIO_API_BASE"]  # the Api domain builds every URL
    return twilio


def send(config, message):
    """Send one SMS; return Twilio's message SID. 4xx is final but 429 (later, as its
    Retry-After says)."""
    twilio = client(config, config["DELIVERY_TIMEOUT"])
    try:
        sent = twilio.messages.create(
            to=message["to"], from_=config["TWILIO_FROM"], body=message["body"][:MAX_LENGTH])
    except TwilioRestException as exc:
        if exc.status == 429:
            # twilio's exception keeps no headers; its client keeps the last answer (named
            # for tests, in the pinned release): read if there, else the usual backoff
            answer = getattr(twilio.http_client, "_test_only_last_response", None)
            wait = retry_after_s((answer.headers or {}).get("Retry-After")) if answer else None
            raise RefusedForNow(f"Twilio asks to wait (429): {exc.msg}", wait or 0) from exc
        if 400 <= exc.status < 500:
            raise DeliveryRejected(f"Twilio refused it ({exc.status}): {exc.msg}") from exc
        raise
    return sent.sid


def outbox_file(message):
    return json.dumps({"channel": "sms", **message}, indent=2).encode(), "json"
