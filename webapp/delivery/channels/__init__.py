"""The delivery channels. Each module builds and sends its own message:

    configured(config)                  is its provider set up? (if not: the local outbox)
    build(user, pref, notification)     the message; DeliveryRejected if it cannot exist
    send(config, message)               hand it over; return the provider's id
    outbox_file(message)                (bytes, file extension) for the local outbox

A new channel is one module here and one line in CHANNELS. A user's own destinations
(`dest:<id>` in the delivery log) are channels too: destination.py gives each the same four.
"""

from webapp.delivery.channels import destination, email, push, sms

CHANNELS = {"email": email, "sms": sms, "push": push}


def lookup(name):
    """The channel a delivery row names: a built-in one, or a user's destination."""
    if name.startswith(destination.PREFIX):
        return destination.channel(name)
    return CHANNELS[name]
