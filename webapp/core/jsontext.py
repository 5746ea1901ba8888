"""Compact JSON text for the hot paths (inbox entries, slow-step batches, API answers).

orjson writes it several times faster than the standard library. What orjson refuses
(integers beyond 64 bits, which JSON carries; keys that are no strings, which json.dumps
turns into strings; its option for those halves its speed) the standard library writes
instead, with the same separators and UTF-8, or refuses with the same TypeError. Any JSON
reader reads both back to the same values; only spelling differs (1e16 beside 1e+16, UTF-8
beside \\u escapes). NaN and Infinity, which no JSON can hold, are written as null: the
standard library wrote NaN, which a browser's JSON.parse rejects.
"""

import json

import orjson


def dumps(value, sort_keys=False):
    """`value` as compact JSON in UTF-8 bytes."""
    try:  # option 0, not None: orjson takes None a quarter slower
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except TypeError:
        return json.dumps(value, sort_keys=sort_keys, ensure_ascii=False,
                          separators=(",", ":")).encode()


# A run of 19 digits in a text, found as b"0" * 19 in it with every digit made "0" and all
# else a space (a regex took 20 times as long): orjson reads some such integers as floats.
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))  # bytes.translate
_LONG_NUMBER = b"0" * 19


def fast_loads(text):
    """JSON text (bytes or str) as orjson reads it, or None where the standard library must
    read it: text orjson refuses (NaN, Infinity, 1e999, lone surrogates, bad UTF-8, a BOM),
    or with a run of 19 or more digits, an integer orjson may read as a float."""
    raw = text.encode(errors="surrogatepass") if isinstance(text, str) else text
    if _LONG_NUMBER in raw.translate(_DIGITS):
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
