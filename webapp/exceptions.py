"""Exceptions the domain code raises and the views translate."""


class InvalidInput(ValueError):
    """Bad input: `errors` maps a field name to what was wrong with it."""

    def __init__(self, errors):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


class NotFound(LookupError):
    """Missing, or owned by someone else: callers cannot tell which."""


class DeliveryRejected(Exception):
    """A provider refused a message for good (bad number, gone subscription): no retry."""
