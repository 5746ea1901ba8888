"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with keys from ENCRYPTION_KEYS.

The first key encrypts and every key decrypts, so a key is rotated by putting a new one
first. Without ENCRYPTION_KEYS the key is derived from SECRET_KEY: changing SECRET_KEY then
makes the stored secrets unreadable (their destinations fail as "cannot decrypt").
"""

import base64

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app

from webapp.exceptions import DeliveryRejected


def _derived(secret_key):
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"tickerbell secrets at rest").derive(secret_key.encode())
    return base64.urlsafe_b64encode(key)


def _box():
    config = current_app.config
    keys = [k.strip() for k in config.get("ENCRYPTION_KEYS", "").split(",") if k.strip()]
    return MultiFernet([Fernet(k) for k in keys] or [Fernet(_derived(config["SECRET_KEY"]))])


def encrypt(text):
    return _box().encrypt(text.encode()).decode()


def decrypt(token):
    """The plain text; DeliveryRejected when no configured key opens it."""
    try:
        return _box().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise DeliveryRejected("cannot decrypt: ENCRYPTION_KEYS or SECRET_KEY changed") from exc
