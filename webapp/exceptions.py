"""Exceptions the domain code raises and the views translate."""

from redis.exceptions import RedisError


class InvalidInput(ValueError):
    """Bad input: `errors` maps a field name to what was wrong with it."""

    def __init__(self, errors):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


class NotFound(LookupError):
    """Missing, or owned by someone else: callers cannot tell which."""


class DeliveryRejected(Exception):
    """A provider refused a message for good (bad number, gone subscription): no retry."""


class RefusedForNow(Exception):
    """A provider answered but refused a message for now (an SMTP 4xx, greylisting; an HTTP
    429): it is retried with backoff, no sooner than `retry_after_s` when the provider said
    (Retry-After), and the provider counts as up."""

    def __init__(self, message, retry_after_s=None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TicksNotMatched(RedisError):
    """Redis failed part way through ticks matched together: `unmatched` are left, in order."""

    def __init__(self, unmatched):
        self.unmatched = unmatched
        super().__init__(f"{len(unmatched)} ticks not matched")
