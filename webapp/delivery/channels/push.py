"""Web Push with VAPID through pywebpush; subscriptions the push service calls gone are removed."""

import base64
import contextlib
import json
from urllib.parse import urlsplit

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pywebpush import WebPushException, webpush
from sqlalchemy import delete

from webapp.core import addresses
from webapp.exceptions import DeliveryRejected
from webapp.extensions import db
from webapp.models import PushSubscription
from webapp.preferences import service as preferences

DEFAULT_TTL = 24 * 3600  # seconds the push service keeps a message for an offline browser
GONE = (404, 410)


def configured(config):
    return bool(config["VAPID_PRIVATE_KEY"] and config["VAPID_PUBLIC_KEY"])


def build(user, pref, notification):
    """One encrypted-payload message for every browser the user subscribed."""
    subs = [{"id": s.id, "endpoint": s.endpoint, "p256dh": s.p256dh, "auth": s.auth}
            for s in preferences.push_subscriptions(user.id)]
    if not subs:
        raise DeliveryRejected("no browser of this user is subscribed to push")
    payload = {"id": str(notification["id"]), "type": notification["type"],
               "priority": notification.get("priority", "normal"),
               "title": notification["title"], "body": notification.get("message", ""),
               # one that insists opens its acknowledgement page when tapped
               "url": notification.get("ack_url") or "/notifications"}
    return {"subscriptions": subs, "payload": json.dumps(payload)}


def _push_one(config, sub, payload, timeout):
    """Return 'sent' or 'gone'; raise on any other failure."""
    if not preferences.push_endpoint_allowed(sub["endpoint"], config):
        return "gone"  # saved before endpoints were checked: never post to a local address
    # the endpoint's name must resolve to a public address when sending too, and a push
    # service that answers with a redirect is not followed (inwards, perhaps)
    guard = (contextlib.nullcontext([]) if config.get("PUSH_ALLOW_INSECURE_ENDPOINTS")
             else addresses.public_only([urlsplit(sub["endpoint"]).hostname]))
    with requests.Session() as session, guard as refused:
        session.max_redirects = 0
        try:
            webpush(subscription_info={"endpoint": sub["endpoint"],
                                       "keys": {"p256dh": sub["p256dh"], "auth": sub["auth"]}},
                    data=payload, vapid_private_key=config["VAPID_PRIVATE_KEY"],
                    vapid_claims={"sub": config["VAPID_SUBJECT"]}, timeout=timeout,
                    ttl=DEFAULT_TTL, requests_session=session)
        except WebPushException as exc:
            if exc.response is not None and exc.response.status_code in GONE:
                return "gone"
            raise
        except requests.ConnectionError:
            if refused:  # its name resolves inwards now: not posted there, the device kept
                raise DeliveryRejected(refused[0]) from None
            raise
    return "sent"


def send(config, message):
    """Push to each of the user's devices; succeed if any took it, drop the gone ones."""
    sent, gone, errors, refused = [], [], [], []
    for sub in message["subscriptions"]:
        try:
            outcome = _push_one(config, sub, message["payload"], config["DELIVERY_TIMEOUT"])
        except (WebPushException, requests.RequestException) as exc:
            errors.append(str(exc).splitlines()[0])
            continue
        except DeliveryRejected as exc:
            refused.append(str(exc))
            continue
        (sent if outcome == "sent" else gone).append(sub["id"])
    if gone:
        db.session.execute(delete(PushSubscription).where(PushSubscription.id.in_(gone)))
        db.session.commit()
    if sent:
        return "devices " + ",".join(str(i) for i in sent)
    if errors:
        raise RuntimeError("; ".join(errors))
    if refused:
        raise DeliveryRejected("; ".join(refused))
    raise DeliveryRejected("every push subscription of this user has expired")


def outbox_file(message):
    body = {"channel": "push", "devices": len(message["subscriptions"]),
            "payload": json.loads(message["payload"])}
    return json.dumps(body, indent=2).encode(), "json"


def generate_vapid_keys():
    """A new VAPID key pair: (private key, base64url raw; public key, base64url uncompressed)."""
    key = ec.generate_private_key(ec.SECP256R1())
    raw = key.private_numbers().private_value.to_bytes(32, "big")
    public = key.public_key().public_bytes(serialization.Encoding.X962,
                                           serialization.PublicFormat.UncompressedPoint)
    return _b64(raw), _b64(public)


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
