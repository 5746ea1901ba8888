"""Security headers on every response: no framing, no sniffing, no referrer leaving the site,
and nothing private kept in a cache."""

from flask import request

# No framing (clickjacking), no <base> or plugin a stray tag could add, and forms post only
# here. Scripts are not limited by origin: every page's text is escaped where it is rendered,
# our own scripts are files (no inline script, no hx-on), and tools that check pages in a
# browser (axe-core, a test's injected script) add inline scripts of their own.
POLICY = "frame-ancestors 'none'; object-src 'none'; base-uri 'self'; form-action 'self'"
HEADERS = {
    "Content-Security-Policy": POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # an acknowledgement link's token, a cursor: never in a Referer to another site
    "Referrer-Policy": "same-origin",
}


def raw():
    """The headers as a raw response head's lines, for a stream written straight to its
    socket (webapp/live/handoff.py), which no after_request sees."""
    return "".join(f"{name}: {value}\r\n" for name, value in HEADERS.items()).encode()


def init_app(app):
    @app.after_request
    def secure(response):
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        # pages and answers hold a user's data or a secret shown once (an API key, a hook's
        # address): no cache keeps them; our static files may be
        if "Cache-Control" not in response.headers and request.endpoint != "static":
            response.headers["Cache-Control"] = "no-store"
        return response
