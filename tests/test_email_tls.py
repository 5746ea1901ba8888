"""Email over STARTTLS and implicit TLS with a login, against a real loopback SMTP server.

The server's certificate comes from a throw-away CA made here; the client trusts it only
through SSL_CERT_FILE, which OpenSSL's default verify paths (ssl.create_default_context)
honour, so a certificate from any other CA must fail the handshake.
"""

import datetime
import ipaddress
import ssl
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.hub import Mailbox, PortZeroController, make_user, run_jobs
from webapp import clock
from webapp.delivery import statements
from webapp.delivery.dispatch import REFUSED_FOR_NOW_BACKOFFS, breaker
from webapp.delivery.sweep import sweep
from webapp.extensions import db
from webapp.models import DeliveryLog
from webapp.notify import router

USER, PASSWORD = "relay-user", "relay-secret"


def _name(text):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _cert(subject, issuer, key, signer, ca, address="127.0.0.1"):
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(address))]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _pem(obj):
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def throwaway_ca(folder, name, addresses):
    """(CA certificate file, {address: server context}) for a CA that lives only in this
    test's tmp dir, with a server certificate for each address."""
    ca_key = _key()
    (folder / f"{name}-ca.pem").write_bytes(_pem(_cert(f"{name} CA", f"{name} CA", ca_key,
                                                       ca_key, ca=True)))
    contexts = {}
    for address in addresses:
        leaf_key, pem = _key(), folder / f"{name}-{address}.pem"
        leaf = _cert(address, f"{name} CA", leaf_key, ca_key, ca=False, address=address)
        pem.write_bytes(_pem(leaf) + _pem(leaf_key))
        contexts[address] = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        contexts[address].load_cert_chain(pem)
    return folder / f"{name}-ca.pem", contexts


class Relay(Mailbox):
    """A mailbox that refuses one recipient with 550, as a relay does for an unknown user."""

    REFUSED = "nobody@example.com"
    GREYLISTED = "greylisted@example.com"  # refused for now, on the first try only

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == self.REFUSED:
            return "550 5.1.1 No such user here"
        if address == self.GREYLISTED and not self.greylisted:
            self.greylisted.append(address)
            return "451 4.7.1 Greylisted, please try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode()
        self.logins.append(ok)
        return AuthResult(success=ok, handled=False)  # False: aiosmtpd answers the 535


@pytest.fixture
def certs(tmp_path, monkeypatch):
    """Server contexts; only the trusted CA's file is set as SSL_CERT_FILE."""
    ca_file, trusted = throwaway_ca(tmp_path, "trusted", ["127.0.0.1", "127.0.0.2"])
    _, rogue = throwaway_ca(tmp_path, "rogue", ["127.0.0.1"])
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    # misnamed: from the trusted CA, but for another address than the one the app dials
    return {"trusted": trusted["127.0.0.1"], "misnamed": trusted["127.0.0.2"],
            "rogue": rogue["127.0.0.1"]}


@pytest.fixture
def relay():
    """start(mode, context): a loopback SMTP relay needing a login over TLS."""
    controllers = []

    def start(mode, context):
        box = Relay()
        box.logins, box.greylisted = [], []
        options = {"authenticator": box.authenticate}
        if mode == "starttls":
            options.update(tls_context=context, require_starttls=True, auth_require_tls=True)
        else:  # implicit TLS: the listening socket speaks TLS, which aiosmtpd's
            # auth_require_tls cannot see (it only knows STARTTLS), so it is left off
            options.update(ssl_context=context, auth_require_tls=False)
        controller = PortZeroController(box, hostname="127.0.0.1", port=0, **options)
        controller.start()
        controllers.append(controller)
        box.port = controller.port
        return box

    yield start
    for controller in controllers:
        controller.stop()


def email_app(make_app, box, mode, password=PASSWORD):
    return make_app(SMTP_HOST="127.0.0.1", SMTP_PORT=box.port, SMTP_TLS=mode, SMTP_USER=USER,
                    SMTP_PASSWORD=password, MAIL_FROM="Tickerbell <bell@tickerbell.test>",
                    DELIVERY_BACKOFF=0, DELIVERY_BREAKER_THRESHOLD=10, DELIVERY_MAX_ATTEMPTS=3)


def notify(app, address="desk@example.com"):
    uid = make_user(app, "ann@example.com", delivery_email=address)
    with app.app_context():
        nid = router.route({"type": "PRICE_ALERT", "user_id": uid, "title": "BTC above 65000",
                            "message": "Traded at 65010"})[0]
    run_jobs(app)
    return nid


def row_of(app, nid):
    with app.app_context():
        row = db.session.scalar(db.select(DeliveryLog).filter_by(notification_id=nid))
        db.session.expunge(row)
        return row


def retry_all(app):
    with app.app_context():
        sweep()
    run_jobs(app)


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
def test_mail_goes_out_over_tls_with_a_login(make_app, relay, certs, mode):
    box = relay(mode, certs["trusted"])
    app = email_app(make_app, box, mode)
    nid = notify(app)
    [mail] = box.wait_for(1)
    assert mail["rcpt"] == ["desk@example.com"] and mail["msg"]["Subject"] == (
        "Price alert: BTC above 65000")
    assert box.logins == [True]
    row = row_of(app, nid)
    assert (row.status, row.attempts) == ("sent", 1)
    assert row.provider_id == mail["msg"]["Message-ID"].strip()


def test_auto_mode_uses_starttls_when_a_user_is_set(make_app, relay, certs):
    box = relay("starttls", certs["trusted"])  # refuses AUTH and MAIL before STARTTLS
    app = email_app(make_app, box, "auto")
    assert row_of(app, notify(app)).status == "sent" and len(box.wait_for(1)) == 1


@pytest.mark.parametrize("mode", ["starttls", "ssl"])
@pytest.mark.parametrize("cert, reason", [("rogue", "unable to get local issuer certificate"),
                                          ("misnamed", "IP address mismatch")])
def test_a_certificate_that_does_not_verify_is_never_sent_to(make_app, relay, certs, mode,
                                                             cert, reason):
    box = relay(mode, certs[cert])
    app = email_app(make_app, box, mode)
    row = row_of(app, notify(app))
    assert (row.status, row.attempts) == ("retrying", 1)
    assert "CERTIFICATE_VERIFY_FAILED" in row.error and reason in row.error
    assert box.messages == [] and box.logins == []  # the password never left the client


def test_a_wrong_password_fails_after_the_last_retry_without_sending(make_app, relay, certs):
    box = relay("starttls", certs["trusted"])
    app = email_app(make_app, box, "starttls", password="wrong")
    nid = notify(app)
    row = row_of(app, nid)
    assert (row.status, row.attempts) == ("retrying", 1) and "535" in row.error
    retry_all(app)
    assert (row_of(app, nid).status, row_of(app, nid).attempts) == ("retrying", 2)
    retry_all(app)  # the third attempt is the last (DELIVERY_MAX_ATTEMPTS)
    row = row_of(app, nid)
    assert (row.status, row.attempts) == ("failed", 3) and "535" in row.error
    assert row.next_attempt_at is None
    retry_all(app)  # nothing is due any more: no fourth login
    assert row_of(app, nid).attempts == 3 and box.messages == []
    assert box.logins == [False] * 6  # smtplib tries PLAIN, then LOGIN, on each attempt
    with app.app_context():
        assert breaker("email").state()["failures"] == 3  # each login failure counted


def test_a_refused_recipient_fails_the_delivery_once_without_retry(make_app, relay, certs):
    box = relay("starttls", certs["trusted"])
    app = email_app(make_app, box, "starttls")
    nid = notify(app, address=Relay.REFUSED)
    row = row_of(app, nid)
    assert (row.status, row.attempts) == ("failed", 1)
    assert "recipient refused" in row.error and "550" in row.error
    retry_all(app)
    assert row_of(app, nid).attempts == 1 and box.messages == []
    with app.app_context():
        assert breaker("email").state()["failures"] == 0  # the relay is up: not its fault


def test_a_recipient_refused_for_now_is_retried_and_arrives_once(make_app, relay, certs):
    """A 4xx is temporary under SMTP's rules: a greylisting server refuses a first try."""
    box = relay("starttls", certs["trusted"])
    app = email_app(make_app, box, "starttls")
    nid = notify(app, address=Relay.GREYLISTED)
    row = row_of(app, nid)
    assert (row.status, row.attempts) == ("retrying", 1) and "451" in row.error
    assert box.messages == []
    retry_all(app)
    assert (row_of(app, nid).status, row_of(app, nid).attempts) == ("sent", 2)
    [mail] = box.wait_for(1)
    assert mail["rcpt"] == [Relay.GREYLISTED]
    with app.app_context():
        assert breaker("email").state()["failures"] == 0  # the relay answered each time


def test_a_refusal_for_now_is_asked_again_no_sooner_than_twenty_backoffs(make_app, relay,
                                                                          certs):
    """A greylisting server refuses for about 5 minutes: the usual backoff (15 s, doubling)
    spent the 5 attempts inside that."""
    box = relay("starttls", certs["trusted"])
    app = email_app(make_app, box, "starttls")
    app.config["DELIVERY_BACKOFF"] = 1  # its usual retry: 1 s later
    before = clock.utcnow()
    row = row_of(app, notify(app, address=Relay.GREYLISTED))
    assert row.status == "retrying"
    assert row.next_attempt_at >= before + timedelta(seconds=REFUSED_FOR_NOW_BACKOFFS)


def test_a_delivery_failed_for_good_is_logged_with_its_reason(make_app, relay, certs, caplog):
    box = relay("starttls", certs["trusted"])
    app = email_app(make_app, box, "starttls")
    nid = notify(app, address=Relay.REFUSED)
    [line] = [r for r in caplog.records if getattr(r, "event", None) == "delivery_finished"
              and r.notification_id == nid]
    assert line.levelname == "WARNING" and "550" in line.error and line.status == "failed"


def test_a_monthly_statement_arrives_over_starttls_with_a_login(make_app, relay, certs):
    box = relay("starttls", certs["trusted"])
    app = email_app(make_app, box, "starttls")
    uid = make_user(app, "month@example.com", timezone="Europe/Berlin",
                    email_monthly_statements="on", email_daily_summary=False,
                    email_weekly_performance=False)
    traded = datetime.datetime(2030, 10, 15, 14, tzinfo=datetime.UTC)
    with app.app_context():
        router.route({"type": "ORDER_EXECUTED", "user_id": uid, "title": "Bought 0.5 BTC"},
                     now_ms=int(traded.timestamp() * 1000))
    run_jobs(app)  # the slow steps record what the statement counts
    with app.app_context():
        first = datetime.datetime(2030, 11, 1, 8, tzinfo=ZoneInfo("Europe/Berlin"))
        assert len(statements.send_due(first)) == 1
    run_jobs(app)
    mails = [m for m in box.wait_for(len(box.messages) + 1)
             if (m["msg"]["X-Tickerbell-Digest"] or "").startswith("monthly ")]
    assert [m["rcpt"] for m in mails] == [["month@example.com"]]
    assert mails[0]["msg"]["Subject"] == "Tickerbell monthly statement: October 2030"
    assert "Order executed: 1" in mails[0]["msg"].get_body(("plain",)).get_content()
    assert box.logins and all(box.logins)  # every message went in after a login over TLS
