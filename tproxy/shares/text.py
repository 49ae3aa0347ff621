"""The share log's one rule for storing text a miner (or a pool) sent: ``storable_text``.

Every string column of a share row (``worker_name``, ``sv1_job_id``,
``extranonce``, ``share_hash``, ``verdict``, ``instance_id``) and the
``pool_verdict`` of a pool verdict row passes through this rule at the edge
of the share log (``ShareLog.submit`` / ``submit_pool_verdict``), so a row
always encodes to UTF-8 and one miner's bytes cannot fail a batch:

* Valid Unicode is stored exactly as received: no trimming, no truncation,
  no escaping. NUL, control characters, newlines and long values are kept
  (ClickHouse ``String`` holds any bytes). The only length bound is the SV1
  line limit (``downstream.max_line_bytes``, 16 KiB by default, 1 MiB at
  most), which bounds every field a miner can send before it gets here.
* A code point Python's UTF-8 encoder refuses, i.e. a lone surrogate
  U+D800..U+DFFF (``json.loads('"\\ud800"')`` yields one), is replaced by
  U+FFFD, one replacement per surrogate. Everything around it is kept.

``storable_text(storable_text(s)) == storable_text(s)``, and the result always
encodes to UTF-8. Anything that displays or looks up a stored name (API,
metrics labels) should apply the same function to a live name to match it.
"""

from __future__ import annotations

import re

REPLACEMENT = "\ufffd"
_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(s: str) -> str:
    """``s`` as the share log stores it (see the module docstring)."""
    if s.isascii():  # the common case: nothing to check
        return s
    return _SURROGATE.sub(REPLACEMENT, s)
