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
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:
        return json.dumps(value, sort_keys=sort_keys, ensure_ascii=False,
                          separators=(",", ":")).encode()
