"""The delivery channels. Each module builds and sends its own message:

    configured(config)                  is its provider set up? (if not: the local outbox)
    build(user, pref, notification)     the message; DeliveryRejected if it cannot exist
    send(config, message)               hand it over; return the provider's id
    outbox_file(message)                (bytes, file extension) for the local outbox

A new channel is one module here and one line in CHANNELS.
"""

from webapp.delivery.channels import email, push, sms

CHANNELS = {"email": email, "sms": sms, "push": push}
