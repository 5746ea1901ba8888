"""`flask vapid-keys`: the key pair browser push needs."""

import click

from webapp.delivery.channels.push import generate_vapid_keys


@click.command("vapid-keys")
def vapid_keys():
    """Print a new VAPID key pair for Web Push, as environment lines."""
    private, public = generate_vapid_keys()
    click.echo(f"VAPID_PRIVATE_KEY={private}")
    click.echo(f"VAPID_PUBLIC_KEY={public}")


COMMANDS = (vapid_keys,)
