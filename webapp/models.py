"""SQL models: what users own. Fast, expiring state lives in Redis."""

from datetime import datetime
from enum import StrEnum

from flask_login import UserMixin
from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from webapp.clock import utcnow  # column defaults; callers may take it from here too
from webapp.extensions import db

# Row ids are INTEGER columns: PostgreSQL refuses larger values, so input outside 1..MAX_ID
# is an id that cannot exist.
MAX_ID = 2**31 - 1


def row_id(value):
    """The row id `value` names (an int, or ASCII digits: an event's alert_id is the sender's
    text), or None when it can name none."""
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if not (text.isascii() and text.isdigit() and len(text) <= 10):
        return None
    return int(text) if 1 <= int(text) <= MAX_ID else None

# An id once handed out is never handed out again: old notifications, logs and links keep
# naming what they named. PostgreSQL's sequences never go back; SQLite reuses the highest
# rowid once its row is deleted unless the table says AUTOINCREMENT.
NO_ID_REUSE = {"sqlite_autoincrement": True}


class User(UserMixin, db.Model):
    __tablename__ = "users"
    __table_args__ = NO_ID_REUSE

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    is_admin: Mapped[bool] = mapped_column(default=False)
    # Bumped on password change so other sessions end (see get_id).
    session_version: Mapped[int] = mapped_column(default=1)

    api_keys: Mapped[list["ApiKey"]] = relationship(
        back_populates="user", cascade="all, delete-orphan"
    )

    def set_password(self, password):
        self.password_hash = generate_password_hash(password, method="scrypt")
        self.session_version = (self.session_version or 0) + 1

    def check_password(self, password):
        return check_password_hash(self.password_hash, password)

    def get_id(self):
        return f"{self.id}:{self.session_version}"


class ApiKey(db.Model):
    __tablename__ = "api_keys"
    __table_args__ = NO_ID_REUSE

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(back_populates="api_keys")


class ServiceToken(db.Model):
    """A token for internal systems: may publish events for any user, reads nothing."""

    __tablename__ = "service_tokens"
    __table_args__ = NO_ID_REUSE

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Alert(db.Model):
    __tablename__ = "alerts"
    __table_args__ = NO_ID_REUSE

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    symbol: Mapped[str] = mapped_column(String(20), index=True)
    # above | below | volume_above | crossing_up | crossing_down | crossing | pct_up |
    # pct_down | channel_exit | channel_enter (webapp/alerts/validation.py: KINDS)
    condition: Mapped[str] = mapped_column(String(16))
    # the level: a price, a 24 h volume (volume_above), a percentage (pct_*) or a
    # channel's low bound (channel_*)
    target: Mapped[float]
    high: Mapped[float | None]  # channel_*: the upper bound
    window_s: Mapped[int | None]  # pct_*: the trailing window the move is measured over
    # A recurring alert fires at most once per cooldown_s.
    cooldown_s: Mapped[int] = mapped_column(default=0, server_default="0")
    mode: Mapped[str] = mapped_column(String(10), default="once")  # once | recurring
    buffer: Mapped[float] = mapped_column(default=0.5)
    buffer_is_pct: Mapped[bool] = mapped_column(default=False)
    expires_at: Mapped[datetime | None]
    note: Mapped[str] = mapped_column(String(200), default="")
    message: Mapped[str] = mapped_column(String(500), default="", server_default="")
    active: Mapped[bool] = mapped_column(default=True, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_fired_at: Mapped[datetime | None]
    last_fired_price: Mapped[float | None]
    # Where its notifications go: built-in channel names ("email", "sms", "push") and
    # destination ids; None: where the type and the user's preferences send them.
    channels: Mapped[list | None] = mapped_column(JSON)


class Preference(db.Model):
    __tablename__ = "preferences"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    rt_order_execution: Mapped[bool] = mapped_column(default=True)
    rt_strategy_status: Mapped[bool] = mapped_column(default=True)
    rt_price_alerts: Mapped[bool] = mapped_column(default=True)
    sms_risk_violations: Mapped[bool] = mapped_column(default=False)
    sms_order_failures: Mapped[bool] = mapped_column(default=False)
    sms_account_security: Mapped[bool] = mapped_column(default=False)
    email_alerts: Mapped[bool] = mapped_column(default=True)
    email_daily_summary: Mapped[bool] = mapped_column(default=True)
    email_weekly_performance: Mapped[bool] = mapped_column(default=True)
    email_monthly_statements: Mapped[bool] = mapped_column(default=False)
    max_per_minute: Mapped[int] = mapped_column(default=10)
    quiet_start: Mapped[str | None] = mapped_column(String(5))  # "22:00"
    quiet_end: Mapped[str | None] = mapped_column(String(5))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    phone: Mapped[str | None] = mapped_column(String(20))
    delivery_email: Mapped[str | None] = mapped_column(String(254))
    # Alerts that insist: these types repeat and escalate until acknowledged (None: the
    # urgent and critical types), every insist_every_min minutes, at most insist_rounds times.
    insist_types: Mapped[list | None] = mapped_column(JSON)
    insist_every_min: Mapped[int] = mapped_column(default=5, server_default="5")
    insist_rounds: Mapped[int] = mapped_column(default=5, server_default="5")


class StrategyFollow(db.Model):
    __tablename__ = "strategy_follows"
    __table_args__ = (UniqueConstraint("user_id", "strategy_id"), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    strategy_id: Mapped[str] = mapped_column(String(64), index=True)


class PushSubscription(db.Model):
    __tablename__ = "push_subscriptions"
    __table_args__ = NO_ID_REUSE

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    endpoint: Mapped[str] = mapped_column(String(1000), unique=True)
    p256dh: Mapped[str] = mapped_column(String(200))
    auth: Mapped[str] = mapped_column(String(100))
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CriticalNotification(db.Model):
    """The audit trail: critical notifications, kept in SQL until expires_at."""

    __tablename__ = "critical_notifications"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(40))
    priority: Mapped[str] = mapped_column(String(10))
    title: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(index=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class DeliveryStatus(StrEnum):
    """Where a DeliveryLog row stands; the column holds the value."""

    QUEUED = "queued"  # due now: its send job is queued
    SENDING = "sending"  # a send job claimed it
    SENT = "sent"
    RETRYING = "retrying"  # an attempt failed; due again at next_attempt_at
    FAILED = "failed"
    HELD = "held"  # quiet hours: due at next_attempt_at
    OUTBOX = "outbox"  # no provider configured: written to the local outbox instead
    DIGEST = "digest"  # over the per-minute limit: listed in the next digest instead
    SKIPPED = "skipped"  # a digest with nothing to say


class DeliveryLog(db.Model):
    __tablename__ = "delivery_log"
    __table_args__ = (UniqueConstraint("notification_id", "user_id", "channel", "round",
                                       name="uq_delivery_log_notification_channel_round"),
                      NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    notification_id: Mapped[str] = mapped_column(String(40), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    channel: Mapped[str] = mapped_column(String(20))  # email | sms | push | dest:<id>
    # 0: the notification's first delivery; 1, 2, ...: the repeats of one that insists
    round: Mapped[int] = mapped_column(default=0, server_default="0")
    status: Mapped[str] = mapped_column(String(12), index=True)  # a DeliveryStatus
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str] = mapped_column(Text, default="")
    provider_id: Mapped[str] = mapped_column(String(200), default="")
    # When a held (quiet hours) or retrying delivery is next due; the sweep job reads it.
    next_attempt_at: Mapped[datetime | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class DigestRun(db.Model):
    __tablename__ = "digest_runs"
    __table_args__ = (UniqueConstraint("user_id", "kind", "period_start"), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(10))  # daily | weekly | monthly (statements)
    period_start: Mapped[datetime]
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)


class StatementEntry(db.Model):
    """A routed notification as the monthly statement counts it: the inbox keeps 7 days, these
    rows STATEMENT_ENTRY_DAYS (worker/jobs.py)."""

    __tablename__ = "statement_entries"

    # the key leads with the user: a statement reads one user's month
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # the notification's
    type: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(index=True)
    # a fired alert's symbol, condition, target and price; empty for other types
    data: Mapped[dict] = mapped_column(JSON, default=dict)


class KnownDevice(db.Model):
    """Devices and addresses a user has logged in from, to flag new ones."""

    __tablename__ = "known_devices"
    __table_args__ = (UniqueConstraint("user_id", "fingerprint"), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)


class Destination(db.Model):
    """A user's own delivery channel: an Apprise URL or a signed outgoing webhook."""

    __tablename__ = "destinations"
    __table_args__ = (UniqueConstraint("user_id", "name"), NO_ID_REUSE)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(10))  # apprise | webhook
    name: Mapped[str] = mapped_column(String(80))
    # Fernet tokens (webapp/core/secretbox.py); the URL is shown back only as url_masked.
    url_encrypted: Mapped[str] = mapped_column(Text)
    secret_encrypted: Mapped[str | None] = mapped_column(Text)
    url_masked: Mapped[str] = mapped_column(String(200))
    # The notification types it receives; None: those the real-time toggles let out.
    types: Mapped[list | None] = mapped_column(JSON)
    escalate: Mapped[bool] = mapped_column(default=True)  # a step of alerts that insist
    enabled: Mapped[bool] = mapped_column(default=True)
    failures: Mapped[int] = mapped_column(default=0)  # consecutive failed attempts
    disabled_reason: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_sent_at: Mapped[datetime | None]

    @property
    def channel(self):
        """Its name in the delivery log."""
        return f"dest:{self.id}"


class HookToken(db.Model):
    """A user's inbound webhook (/hooks/<token>): TradingView alerts become notifications."""

    __tablename__ = "hook_tokens"
    __table_args__ = NO_ID_REUSE

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    prefix: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class Escalation(db.Model):
    """A notification that insists: its deliveries repeat until acknowledged (the audit of it)."""

    __tablename__ = "escalations"

    notification_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(40))
    title: Mapped[str] = mapped_column(String(200), default="")
    rounds: Mapped[int] = mapped_column(default=0)  # repeats sent so far
    max_rounds: Mapped[int]
    every_s: Mapped[int]
    next_at: Mapped[datetime | None] = mapped_column(index=True)  # None once it has ended
    expires_at: Mapped[datetime]
    # "" while it insists; acknowledged | exhausted | expired | deleted (from the inbox) |
    # switched_off (its type no longer insists for its user)
    ended: Mapped[str] = mapped_column(String(12), default="")
    acked_at: Mapped[datetime | None]
    acked_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # the channels its alert named (as Alert.channels), which bound every round; None: any
    channels: Mapped[list | None] = mapped_column(JSON, nullable=True)


class Installation(db.Model):
    """One row: this database's own random id. `make run`'s private Redis keeps one
    database's data (inboxes and read state are keyed by user id), so it keeps a data folder
    per database id (devtools/launch.py): another database's users never see them."""

    __tablename__ = "installation"
    __table_args__ = NO_ID_REUSE
    id: Mapped[int] = mapped_column(primary_key=True)
    token: Mapped[str] = mapped_column(String(32))
