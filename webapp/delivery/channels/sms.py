"""SMS through Twilio's REST API; TWILIO_API_BASE points the client elsewhere (tests)."""

import json

from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from webapp.delivery.channels.context import describe, one_line
from webapp.exceptions import DeliveryRejected

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
    """Send one SMS; return Twilio's message SID. 4xx other than 429 is final."""
    try:
        sent = client(config, config["DELIVERY_TIMEOUT"]).messages.create(
            to=message["to"], from_=config["TWILIO_FROM"], body=message["body"][:MAX_LENGTH])
    except TwilioRestException as exc:
        if 400 <= exc.status < 500 and exc.status != 429:
            raise DeliveryRejected(f"Twilio refused it ({exc.status}): {exc.msg}") from exc
        raise
    return sent.sid


def outbox_file(message):
    return json.dumps({"channel": "sms", **message}, indent=2).encode(), "json"
