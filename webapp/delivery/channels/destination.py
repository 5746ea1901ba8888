"""A user's own destinations as delivery channels (`dest:<id>` in the delivery log).

    apprise   any service Apprise reaches (Telegram, Discord, Slack, ntfy, ...), by its URL
    webhook   our signed POST: the API's notification item as JSON, with
              X-Tickerbell-Timestamp and X-Tickerbell-Signature: sha256=HMAC("<ts>.<body>")

The host is checked against private addresses before each send (webapp/core/addresses.py);
a webhook connects to the very address it checked. Every failed attempt counts; after
DESTINATION_MAX_FAILURES in a row the destination is switched off and `destination_disabled`
is sent (webapp/destinations tells the user).
"""

import contextlib
import hashlib
import hmac
import json
import logging
import threading
import time
import warnings
from urllib.parse import parse_qs, urlsplit

import apprise
import certifi
import urllib3
from blinker import Namespace
from flask import current_app
from sqlalchemy import update

from webapp import clock
from webapp.core import addresses, logs, secretbox
from webapp.delivery.channels.context import describe, retry_after_s
from webapp.errors import SQL_FAULTS
from webapp.exceptions import DeliveryRejected, RefusedForNow
from webapp.extensions import db
from webapp.inbox import service as inbox
from webapp.models import Destination

PREFIX = "dest:"
USER_AGENT = "Tickerbell-Webhook/1"
FINAL_STATUSES = range(400, 500)  # the receiver refused this message: no retry ...
RETRIED_STATUSES = {408, 409, 425, 429}  # ... except these, which say "later"

destination_disabled = Namespace().signal("destination-disabled")
log = logging.getLogger(__name__)


def channel(name):
    """The channel for `dest:<id>`."""
    return DestinationChannel(int(name[len(PREFIX):]))


def sign(secret, timestamp, body):
    """The signature header's value for a body sent at `timestamp` (seconds, as text)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class DestinationChannel:
    def __init__(self, destination_id):
        self.destination_id = destination_id

    def configured(self, config):
        return True  # a destination is its own provider

    def build(self, user, pref, notification):
        """What goes to the destination: decrypted here, in the job, never stored plain."""
        dest = db.session.get(Destination, self.destination_id)
        if dest is None or dest.user_id != user.id:
            raise DeliveryRejected("the destination was deleted")
        if not dest.enabled:
            raise DeliveryRejected(f"the destination is switched off: {dest.disabled_reason}")
        message = {"destination_id": dest.id, "kind": dest.kind,
                   "url": secretbox.decrypt(dest.url_encrypted)}
        if dest.kind == "webhook":
            item = inbox.to_api(notification)
            if notification.get("ack_url"):
                item["ack_url"] = notification["ack_url"]
            message["secret"] = secretbox.decrypt(dest.secret_encrypted or "") \
                if dest.secret_encrypted else ""
            message["body"] = json.dumps(item, separators=(",", ":")).encode()
        else:
            context = describe(notification)
            message["title"] = f"{context['label']}: {notification['title']}"
            text = notification.get("message", "")
            if notification.get("ack_url"):
                text += f"\n\nAcknowledge: {notification['ack_url']}"
            message["body"] = text or notification["title"]
        return message

    def send(self, config, message):
        """Deliver; count the outcome on the destination. Returns what the receiver said."""
        sender = post_webhook if message["kind"] == "webhook" else notify_apprise
        try:
            outcome = sender(config, message)
        except RefusedForNow:  # it answered, and asks for later: not a failure to count
            raise
        except Exception as exc:
            _counted(record_failure, message["destination_id"], f"{type(exc).__name__}: {exc}")
            raise
        _counted(record_success, message["destination_id"])
        return outcome

    def outbox_file(self, message):
        shown = {k: v for k, v in message.items() if k not in ("url", "secret")}
        if isinstance(shown.get("body"), bytes):
            shown["body"] = shown["body"].decode()
        return json.dumps({"channel": "destination", **shown}, indent=2).encode(), "json"


def post_webhook(config, message):
    """POST the signed body to the address checked just now (no second lookup to rebind)."""
    parts = urlsplit(message["url"])
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    found = addresses.resolve(parts.hostname, port)
    if not found:
        raise ConnectionError(f"{parts.hostname} does not resolve")
    refused = addresses.refusal(parts.hostname, port, found)
    if refused:
        raise DeliveryRejected(refused)
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "Host": parts.netloc.rpartition("@")[2], "X-Tickerbell-Timestamp": timestamp}
    if message["secret"]:
        headers["X-Tickerbell-Signature"] = sign(message["secret"], timestamp, message["body"])
    timeout = urllib3.Timeout(total=config["DELIVERY_TIMEOUT"])
    options = {"server_hostname": parts.hostname, "assert_hostname": parts.hostname,
               "cert_reqs": "CERT_REQUIRED", "ca_certs": certifi.where()} if secure else {}
    pool_class = urllib3.HTTPSConnectionPool if secure else urllib3.HTTPConnectionPool
    with pool_class(found[0], port, timeout=timeout, retries=False, **options) as pool:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        response = pool.urlopen("POST", path, body=message["body"], headers=headers,
                                redirect=False, preload_content=True)
    status = response.status
    if status == 429:
        wait = retry_after_s(response.headers.get("Retry-After"))
        raise RefusedForNow("the receiver asks to wait (429)", wait or 0)
    if status in FINAL_STATUSES and status not in RETRIED_STATUSES:
        raise DeliveryRejected(f"the receiver answered {status}")
    if not 200 <= status < 300:
        raise ConnectionError(f"the receiver answered {status}")
    return f"HTTP {status}"


def notify_apprise(config, message):
    """Hand the message to Apprise; its own log lines are the error when it fails."""
    plugin = apprise_plugin(message["url"])
    if plugin is None:
        raise DeliveryRejected("Apprise does not understand this URL")
    hosts = apprise_hosts(plugin)
    refused = apprise_refusal(plugin, hosts)
    if refused:
        raise DeliveryRejected(refused)
    plugin.socket_connect_timeout = plugin.socket_read_timeout = config["DELIVERY_TIMEOUT"]
    plugin.redirects = False  # a public host must not send us on to a private one
    said = OwnLines()
    apprise_log = logging.getLogger("apprise")
    apprise_log.addHandler(said)
    guard = (contextlib.nullcontext([]) if config.get("DESTINATIONS_ALLOW_PRIVATE")
             else addresses.public_only())
    try:
        # Apprise looks the names up again (they may answer otherwise), and some plugins make
        # a host of other parts of the URL: every address it reaches must be public
        with guard as refused:
            sent = plugin.notify(title=message["title"], body=message["body"],
                                 body_format=apprise.NotifyFormat.TEXT)
    finally:
        apprise_log.removeHandler(said)
    if refused:
        raise DeliveryRejected(refused[0])
    if not sent:
        text = " ".join(" ".join(said.lines).split())[-500:]
        raise ConnectionError(text or f"{plugin.service_name} did not take the message")
    return plugin.service_name


class OwnLines(logging.Handler):
    """Apprise's warnings from this thread (greenlet, under gevent) only: two sends at once
    in one web process must not show each other's errors."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.ident, self.lines = threading.get_ident(), []

    def emit(self, record):
        if record.thread == self.ident:
            self.lines.append(record.getMessage())


def apprise_plugin(url):
    """Apprise's plugin for `url`, or None when no plugin understands it."""
    with warnings.catch_warnings():
        # Its first use loads every plugin, and the e-mail one imports the stdlib's imghdr
        # (deprecated): harmless, but a warning the tests turn into an error.
        warnings.simplefilter("ignore", DeprecationWarning)
        return apprise.Apprise.instantiate(url)


def apprise_hosts(plugin):
    """The (host, port) pairs a user names in an Apprise plugin's URL. Only plugins aimed at
    a host the user names have one (a Telegram URL's "host" is its bot token); an e-mail URL
    names its SMTP server apart (?smtp=)."""
    hosts = []
    cloud = getattr(plugin, "mode", None) == "cloud"  # ntfy's own server: "host" is a topic
    if not cloud and any("{host}" in template for template in plugin.templates):
        hosts.append((plugin.host, plugin.port))
    if getattr(plugin, "smtp_host", None):
        hosts.append((plugin.smtp_host, plugin.port))
    return hosts


# Apprise plugins that reach the user's host without a name lookup Python sees (rsyslog:
# UDP `sendto` a name), so the check could not hold when they send
UNGUARDED = {"rsyslog": "Apprise's rsyslog:// is not accepted: use a service that connects "
                        "over TCP (json://, ntfy://, a webhook)"}


# Apprise's URL arguments that name a file on this machine and are kept as plain text, not
# as an attachment (vapid://, and e-mail's PGP keys): a user could read, or probe for, the
# server's files with them
FILE_ARGUMENTS = frozenset({"keyfile", "subfile", "pgppub", "pgpprv"})


def apprise_refusal(plugin, hosts=None):
    """Why an Apprise plugin may not be reached, or None."""
    if plugin.protocol in UNGUARDED:
        return UNGUARDED[plugin.protocol]
    if any(isinstance(value, apprise.AppriseAttachment) and len(value)
           for value in vars(plugin).values()) or _names_a_file(plugin):
        return "Apprise URLs that load a file or another URL (keyfile=...) are not accepted"
    hosts = apprise_hosts(plugin) if hosts is None else hosts
    if any(port == 0 for _, port in hosts):
        return "Port 0 cannot be reached: leave the port out for the service's own."
    return next(filter(None, (addresses.refusal(h, p) for h, p in hosts)), None)


def _names_a_file(plugin):
    """Whether the plugin was given a file argument: its own URL says so, however the user
    spelt the argument (an alias, upper case)."""
    query = urlsplit(plugin.url(privacy=False)).query
    return any(name.lower() in FILE_ARGUMENTS for name in parse_qs(query))


def _counted(record, destination_id, *args):
    """Count an outcome on the destination, in a transaction of its own, if the database
    lets us now: under a lock this one outcome goes uncounted (logged), and the delivery's
    own is still written (a webhook its receiver took was left `sending`, then sent again)."""
    try:
        record(destination_id, *args)
    except SQL_FAULTS as exc:
        logs.event(log, "destination_not_counted", logging.WARNING, destination=destination_id,
                   error=logs.error_text(exc))


def record_success(destination_id):
    with db.engine.begin() as conn:  # apart from the session, which holds the delivery
        conn.execute(update(Destination).where(Destination.id == destination_id)
                     .values(failures=0, last_sent_at=clock.utcnow()))


def record_failure(destination_id, error):
    """Count a failed attempt; switch the destination off at the limit (once)."""
    limit = current_app.config["DESTINATION_MAX_FAILURES"]
    reason = f"{limit} attempts in a row failed; the last: {error}"[:300]
    with db.engine.begin() as conn:  # apart from the session, which holds the delivery
        conn.execute(update(Destination).where(Destination.id == destination_id)
                     .values(failures=Destination.failures + 1))
        switched_off = conn.execute(update(Destination).where(
            Destination.id == destination_id, Destination.enabled,
            Destination.failures >= limit).values(enabled=False, disabled_reason=reason)).rowcount
    if switched_off:
        dest = db.session.get(Destination, destination_id, populate_existing=True)
        logs.event(log, "destination_disabled", logging.WARNING, destination=dest.id,
                   user_id=dest.user_id)
        destination_disabled.send(current_app._get_current_object(), destination=dest)
