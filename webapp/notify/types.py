"""The type registry: one table saying how each notification type is stored and delivered."""

from dataclasses import dataclass

PRIORITIES = ("low", "normal", "high", "critical")


@dataclass(frozen=True)
class NotificationType:
    name: str
    label: str
    default_priority: str = "normal"
    critical: bool = False  # persisted to the SQL audit trail, never silenced
    realtime_toggle: str | None = None  # Preference column gating push/email as it happens
    sms_toggle: str | None = None  # Preference column opting in to SMS; None: never SMS


_T = NotificationType

# From the product brief. Critical types bypass quiet hours and the per-minute limit.
# RISK_VIOLATION honours the "SMS for risk violations" toggle too: a user who asks for SMS
# on risk violations expects it for the critical kind as well as for limit breaches.
TYPES = {t.name: t for t in (
    _T("PRICE_ALERT", "Price alert", realtime_toggle="rt_price_alerts"),
    _T("VOLUME_ALERT", "Volume alert", realtime_toggle="rt_price_alerts"),
    _T("ORDER_EXECUTED", "Order executed", realtime_toggle="rt_order_execution"),
    _T("ORDER_EXECUTION_FAILED", "Order execution failed", "high",
       realtime_toggle="rt_order_execution", sms_toggle="sms_order_failures"),
    _T("STRATEGY_STATUS", "Strategy status", realtime_toggle="rt_strategy_status"),
    _T("STRATEGY_PERFORMANCE", "Strategy performance", "low",
       realtime_toggle="rt_strategy_status"),
    _T("RISK_VIOLATION", "Risk violation", "critical", critical=True,
       sms_toggle="sms_risk_violations"),
    _T("RISK_LIMIT_BREACHED", "Risk limit breached", "high", sms_toggle="sms_risk_violations"),
    _T("BROKER_DISCONNECTED", "Broker disconnected", "high", sms_toggle="sms_order_failures"),
    _T("SYSTEM_ERROR", "System error", "high"),
    _T("ACCOUNT_SECURITY", "Account security", "critical", critical=True,
       sms_toggle="sms_account_security"),
    _T("REGULATORY_NOTICE", "Regulatory notice", "critical", critical=True),
    _T("SYSTEM_MAINTENANCE", "System maintenance", "high", critical=True),
    # A user's own inbound webhook (webapp/hooks): they made it to hear of it, so no toggle.
    _T("WEBHOOK_ALERT", "Webhook alert"),
)}

CRITICAL_TYPES = frozenset(name for name, t in TYPES.items() if t.critical)
URGENT_TYPES = frozenset(name for name, t in TYPES.items() if t.sms_toggle and not t.critical)


def get(name):
    """The registry entry for `name`, or None for an unknown type."""
    return TYPES.get(name)


def is_critical(notification):
    """Critical by type or marked critical by its sender: stored for audit and never held."""
    return (notification.get("type") in CRITICAL_TYPES
            or notification.get("priority") == "critical")
