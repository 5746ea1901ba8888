"""Text we store, checked alike wherever it comes from: no control characters (PostgreSQL
refuses a NUL in a text column, so a row holding one is never written) and no lone UTF-16
surrogates (no store encodes them), no bidirectional override. A message may hold tabs and
line breaks; a name or a title is one line."""

import re
from urllib.parse import unquote_to_bytes

from flask import abort, request

# the bidirectional overrides (LRO, RLO) make text read other than it is ("txt.exe" shown
# as "exe.txt"); the marks, embeddings and isolates right-to-left text is written with stay
_BIDI = "\u202d\u202e"
_IN_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f\u2028\u2029{_BIDI}\ud800-\udfff]")
_IN_TEXT = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_BIDI}\ud800-\udfff]")


def is_line(value):
    """Whether `value` is one line of plain text (a name, a title)."""
    # printable ASCII, the usual text, is told without the pattern at a fraction of its cost
    return (value.isascii() and value.isprintable()) or _IN_LINE.search(value) is None


def is_text(value):
    """Whether `value` is plain text, tabs and line breaks allowed (a message)."""
    return (value.isascii() and value.isprintable()) or _IN_TEXT.search(value) is None


def cleaned(value):
    """`value` without what is_text refuses: for senders who cannot read our answer."""
    return _IN_TEXT.sub("", value)


NOT_UTF8 = ("Text must be valid Unicode (UTF-8): the form held bytes that are no character, "
            "such as a lone surrogate.")


def init_app(app):
    @app.before_request
    def forms_are_text():
        """A form's bytes that are no UTF-8 (a lone surrogate's ED A0 80, a stray FF) are a
        422, before anything reads the form: Werkzeug keeps them as "%ED%A0%80" text, which
        was saved as such (an email address, a note, a name)."""
        if (request.mimetype != "application/x-www-form-urlencoded" or not request.content_length
                or request.path.startswith(("/api/", "/hooks/"))):
            return  # machines' bodies are read raw by their views (`curl -d` sends this type)
        for part in request.get_data(cache=True).split(b"&"):
            try:
                unquote_to_bytes(part.replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError:
                abort(422, description=NOT_UTF8)
