"""The one rule for text that reaches monitoring from the outside.

Owns ``clean_text``. Any string a miner sends (worker name, user agent...) or
that a source copies from the network may hold anything a Python ``str`` can:
NULs, control characters, newlines, thousands of characters, and lone
surrogates (``"\\ud800"`` in a JSON string decodes to one). Everything but the
last is valid Unicode and is kept exactly as received: JSON escapes control
characters, and the Prometheus text format escapes ``\\``, ``"`` and newline
in label values (prometheus-client does; ``promtool check metrics`` accepts
NUL, CR, other control characters and 10,000-character values as they are,
tested in tests/monitoring/test_hostile_names.py). A lone surrogate is not a
Unicode scalar value: it cannot be encoded as UTF-8, so it would make the
Prometheus rendering (and any strict JSON consumer) fail. Each one is
replaced by U+FFFD; nothing else is changed. The share log applies the same
rule, so a name is the same string in the API, the metrics and the database.

A worker is addressed as ``/api/v1/workers/{url_segment(name)}``: the
percent-encoding of the name's UTF-8 bytes (for a name that held a lone
surrogate, of its U+FFFD form, which is the name monitoring stores).

The snapshot applies ``clean_text`` where it takes strings from the source,
so no other monitoring code ever sees a lone surrogate.
"""

from __future__ import annotations

import re
from urllib.parse import quote

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(s: str) -> str:
    """``s`` with each lone surrogate replaced by U+FFFD; otherwise ``s`` itself.

    A well-formed astral character (an emoji) is one code point in a Python
    ``str``, never a surrogate pair, so every surrogate code point in a ``str``
    is a lone one.
    """
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(REPLACEMENT, s)
    return s


def url_segment(name: str) -> str:
    """``name`` as one URL path segment: every byte but the RFC 3986 unreserved ones
    percent-encoded, and a name that is exactly "." or ".." written as %2E / %2E%2E
    (HTTP clients remove those dot segments before sending)."""
    seg = quote(clean_text(name), safe="")
    return seg.replace(".", "%2E") if seg in (".", "..") else seg
