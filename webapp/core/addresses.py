"""No requests to private addresses from user input: what a user-given host resolves to.

A destination is checked when it is saved and again before every send (a name can be made to
resolve elsewhere later). A library that looks the name up again itself (Apprise) sends
within `public_only`, so a second answer cannot point it inside either (DNS rebinding).
DESTINATIONS_ALLOW_PRIVATE lifts the rule (tests, a LAN's services).
"""

import contextvars
import ipaddress
import re
import socket
import sys
from contextlib import contextmanager
from urllib.parse import urlsplit
from urllib.request import getproxies

from flask import current_app


def bare(host):
    """A host as the resolver takes it: `[::1]` (a URL's IPv6 form) without its brackets and
    an IPv6 address without its `%zone` (urlsplit's hostname keeps it), lower case, no
    trailing dot."""
    name = str(host or "").strip().lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    if ":" in name:
        name = name.split("%", 1)[0]
    return name.rstrip(".")


def resolve(host, port):
    """The addresses `host` resolves to; [] if it does not resolve."""
    try:
        infos = socket.getaddrinfo(bare(host), port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError):
        return []
    return list(dict.fromkeys(info[4][0] for info in infos))


MAX_NAME = 253  # characters in a DNS name (RFC 1035)
LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)", re.IGNORECASE)  # one part between dots
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known prefix: an IPv4 address inside


def is_public(address):
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        inside = ip.ipv4_mapped or ip.sixtofour or (ip.teredo or (None, None))[1]
        if inside is None and (ip in NAT64 or (int(ip) >> 32 == 0 and int(ip) > 1)):
            inside = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)  # NAT64, or ::a.b.c.d
        ip = inside or ip  # an IPv4 address inside: judge that one
    return ip.is_global and not ip.is_multicast


def malformed(name):
    """Why `name` (bare) can be no host at all (a sentence), or None: an address, or a DNS name
    of labels of 1 to 63 letters, digits and inner hyphens (underscores allowed), 253 in all,
    as IDNA encodes it, each `xn--` label one that decodes."""
    try:
        ipaddress.ip_address(name)
        return None
    except ValueError:
        pass
    try:
        encoded = name.encode("idna")
        labels = encoded.decode("ascii").split(".")
        for label in labels:  # punycode that decodes to nothing (IDNA 2008's ß included)
            if label.lower().startswith("xn--") and not label[4:].encode().decode("punycode"):
                raise UnicodeError(label)
    except UnicodeError:  # a label empty or longer than 63, or not IDNA at all
        encoded, labels = b"", []
    if not encoded or len(encoded) > MAX_NAME or not all(map(LABEL.fullmatch, labels)):
        return (f"{name[:60]}{'...' if len(name) > 60 else ''} is not a host name: each part "
                f"between dots has 1 to 63 letters, digits or inner hyphens, and the name at "
                f"most {MAX_NAME} characters")
    return None


def refusal(host, port=None, addresses=None):
    """Why `host` may not be reached (a sentence), or None when it may."""
    name = bare(host)
    wrong = name and malformed(name)
    if wrong:
        return wrong
    if current_app.config.get("DESTINATIONS_ALLOW_PRIVATE"):
        return None
    if name == "localhost" or name.endswith(".localhost"):
        return f"{host} is this machine: private and loopback addresses are refused"
    for address in addresses if addresses is not None else resolve(name, port):
        if not is_public(address):
            return (f"{host} resolves to {address}, a private or loopback address: "
                    "destinations must be reachable on the public internet")
    return None


_GUARDED = contextvars.ContextVar("public_only", default=None)  # per thread and greenlet


@contextmanager
def public_only(hosts=None):
    """While inside, the user-given `hosts` resolve to their public addresses only, for any
    library's lookup in this thread (or greenlet): a name checked just before may answer
    otherwise when the library looks it up itself. Other names resolve as ever (a service's own
    API host). `hosts` None: every name looked up inside but the operator's proxies, for a
    library that may build a host from any part of a user's URL (Apprise's zulip:// makes one
    of its organisation). Yields a list that collects why a lookup was refused."""
    _wrap_resolver()
    refused = []
    names = None if hosts is None else frozenset(bare(host) for host in hosts if host)
    token = _GUARDED.set((names, _proxies() if names is None else frozenset(), refused))
    try:
        yield refused
    finally:
        _GUARDED.reset(token)


def _proxies():
    """The hosts of the operator's proxies (HTTPS_PROXY, ...): theirs to choose. A value
    without a scheme (`proxy:3128`) is a host and port, as requests reads it."""
    urls = (url if "://" in url else f"http://{url}"
            for scheme, url in getproxies().items() if scheme != "no" and url)
    return frozenset(bare(urlsplit(url).hostname) for url in urls if urlsplit(url).hostname)


def _wrap_resolver():
    """getaddrinfo made to drop a guarded name's private addresses: the socket module's, and
    under gevent its own too (gevent's create_connection, which smtplib and others use once
    patched, calls it directly). Wrapped at first use, and again should something replace it
    later (gevent's patching does so)."""
    for module in (socket, sys.modules.get("gevent.socket")):
        if module is not None and not getattr(module.getaddrinfo, "public_only", False):
            module.getaddrinfo = _guarded(module.getaddrinfo)


def _guarded(resolver):
    def getaddrinfo(host, *args, **kwargs):
        found = resolver(host, *args, **kwargs)
        guarded = _GUARDED.get()
        if guarded is None:
            return found
        names, proxies, refused = guarded
        name = bare(host.decode("ascii", "replace") if isinstance(host, bytes) else host)
        if not name or name in proxies or (names is not None and name not in names):
            return found
        kept = [info for info in found if is_public(info[4][0])]
        if not kept:
            reason = (f"{name} resolved to {found[0][4][0]} when sending, a private or "
                      "loopback address: destinations must be reachable on the public internet")
            refused.append(reason)
            raise socket.gaierror(socket.EAI_NONAME, reason)
        return kept

    getaddrinfo.public_only = True
    return getaddrinfo
