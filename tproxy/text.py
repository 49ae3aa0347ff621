"""The one rule for text a miner (or a pool) sent: ``clean_text``.

It is applied where text enters the proxy: every string of an SV1 request at
parse time (``tproxy.sv1.protocol.parse_line``), and again, as defence in
depth, to every string column at the edge of the share log
(``ShareLog.submit`` / ``submit_pool_verdict``), so a row always encodes to
UTF-8 and one miner's bytes cannot fail a batch. ``monitoring.text.clean_text``
is the same rule on the monitoring side of the package boundary (monitoring
imports nothing from ``tproxy``). The rule:

* Valid Unicode is stored exactly as received: no trimming, no truncation,
  no escaping. NUL, control characters, newlines and long values are kept
  (ClickHouse ``String`` holds any bytes). The only length bound is the SV1
  line limit (``downstream.max_line_bytes``, 16 KiB by default, 1 MiB at
  most), which bounds every field a miner can send before it gets here.
* A code point Python's UTF-8 encoder refuses, i.e. a lone surrogate
  U+D800..U+DFFF (``json.loads('"\\ud800"')`` yields one), is replaced by
  U+FFFD, one replacement per surrogate. Everything around it is kept.

``clean_text(clean_text(s)) == clean_text(s)``, and the result always
encodes to UTF-8. Anything that displays or looks up a stored name (API,
metrics labels) should apply the same function to a live name to match it.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(s: str) -> str:
    """``s`` under the rule of the module docstring."""
    if s.isascii():  # the common case: nothing to check
        return s
    return _SURROGATE.sub(REPLACEMENT, s)
