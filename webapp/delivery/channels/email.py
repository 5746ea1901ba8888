"""Email over SMTP (plain, STARTTLS or implicit TLS; works with SendGrid's relay)."""

import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

from flask import current_app, render_template

from webapp.delivery.channels.context import describe, one_line
from webapp.exceptions import DeliveryRejected, RefusedForNow

SUBJECT_MAX = 200


def configured(config):
    return bool(config["SMTP_HOST"])


def address(user, pref):
    return pref.delivery_email or user.email


def build(user, pref, notification):
    """The email for one notification."""
    context = describe(notification, pref)  # its time in the user's zone
    prefix = "[Critical] " if context["critical"] else ""
    subject = one_line(f"{prefix}{context['label']}: {notification['title']}")[:SUBJECT_MAX]
    # the same for the same email: sent again (a worker killed after the relay took it), a
    # mail client shows it once; a reminder's title, and so its id, is its own
    tag = hashlib.sha256(subject.encode()).hexdigest()[:12]
    return compose(
        current_app.config, address(user, pref), subject,
        render_template("email/notification.txt", **context),
        render_template("email/notification.html", **context),
        headers={"X-Tickerbell-Notification": str(notification["id"]),
                 "X-Tickerbell-Type": notification["type"]},
        message_id=f"tickerbell.{notification['id']}.{tag}")


def compose(config, to, subject, text, html, headers=None, message_id=None):
    """A multipart/alternative message: the text body first, the HTML one preferred.
    `message_id`: the left part of its Message-ID, made unique when not given."""
    msg = EmailMessage()
    msg["From"] = config["MAIL_FROM"]
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(usegmt=True)
    domain = parseaddr(config["MAIL_FROM"])[1].rpartition("@")[2] or "tickerbell.local"
    msg["Message-ID"] = (f"<{message_id}@{domain}>" if message_id
                         else make_msgid("tickerbell", domain=domain))
    msg["Auto-Submitted"] = "auto-generated"
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


def tls_mode(config):
    """auto: implicit TLS on 465, STARTTLS when logging in, else plain (a local relay)."""
    mode = (config["SMTP_TLS"] or "auto").strip().lower()
    if mode in {"1", "true", "yes", "on", "starttls"}:
        return "starttls"
    if mode in {"ssl", "tls", "implicit"}:
        return "ssl"
    if mode == "auto":
        if int(config["SMTP_PORT"]) == 465:
            return "ssl"
        return "starttls" if config["SMTP_USER"] else "none"
    return "none"


def send(config, msg):
    """Hand the message to the SMTP server; return its Message-ID."""
    mode = tls_mode(config)
    context = ssl.create_default_context()
    host, port = config["SMTP_HOST"], int(config["SMTP_PORT"])
    timeout = config["DELIVERY_TIMEOUT"]
    if mode == "ssl":
        smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
    else:
        smtp = smtplib.SMTP(host, port, timeout=timeout)
    with smtp:
        if mode == "starttls":
            smtp.starttls(context=context)
        if config["SMTP_USER"]:
            smtp.login(config["SMTP_USER"], config["SMTP_PASSWORD"])
        try:
            smtp.send_message(msg)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            _refused(f"recipient refused: {exc.recipients}", codes, exc)
        except smtplib.SMTPDataError as exc:  # the message itself, after DATA
            _refused(f"message refused: {exc.smtp_code} {exc.smtp_error!r}", [exc.smtp_code], exc)
    return msg["Message-ID"]


def _refused(error, codes, exc):
    """A 5xx is for good (RFC 5321); a 4xx is for now (a greylisting server, a full
    mailbox) and is retried."""
    if all(500 <= code < 600 for code in codes):
        raise DeliveryRejected(error) from exc
    raise RefusedForNow(error) from exc


def outbox_file(msg):
    return msg.as_bytes(), "eml"
