"""Test infrastructure: a ClickHouse HTTP front backed by a real embedded chdb engine.

We have no ClickHouse server in the test environment, so this speaks just
enough of ClickHouse's HTTP interface for clickhouse-connect: ``GET /ping``,
queries (query text in the ``query`` parameter and/or the body, result in
the format named by a trailing ``FORMAT`` clause), and ``INSERT ... FORMAT
Native`` with the rows in the body (lz4/gzip/zstd ``Content-Encoding`` is
decoded). An insert is executed as ``INSERT INTO t (cols) FROM INFILE
'<body written to a temp file>' SETTINGS <the request's settings> FORMAT
Native``, so ``insert_deduplication_token`` and the other settings reach a
real engine and the tests can count rows exactly.

Switchable faults, for the share log's fault tests:

* ``stop()`` / ``start()``: the port is closed (connections refused) and
  open connections are cut; ``start()`` listens again on the same port.
* ``stall(execute=..., inserts_only=...)``: accept requests and never answer
  until ``unstall()`` (the client times out); ``inserts_only`` stalls only
  INSERTs (uncompressed bodies) and answers other queries. With ``execute=True`` the insert is
  executed first, then the answer is withheld: the data landed but the
  client believes it failed, the case the deduplication token exists for.
* ``fail_next(n, execute=..., inserts_only=...)``: answer the next ``n``
  requests (except ``/ping``; only INSERTs with ``inserts_only``) with HTTP
  500, optionally after executing them.

Only binds 127.0.0.1. One instance per test; it owns a chdb handle on the
engine path it is given (chdb allows one engine path per process).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import chdb

# Parameters clickhouse-connect sends that are transport options, not settings.
_TRANSPORT = {
    "query", "database", "query_id", "session_id", "session_timeout", "session_check", "wait_end_of_query",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms", "enable_http_compression",
    "default_format", "compress", "decompress", "client_protocol_version", "quota_key", "role", "buffer_size",
    "user", "password",
}
_TRAILING_FORMAT = re.compile(r"\s+FORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)
_INSERT = re.compile(r"^\s*INSERT\s+INTO\s+(.+?)\s+FORMAT\s+(\w+)\s*$", re.IGNORECASE | re.DOTALL)


def _decode_body(body: bytes, encoding: str | None) -> bytes:
    if not encoding or encoding == "identity":
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "lz4":
        import lz4.frame

        return bytes(lz4.frame.decompress(body))
    if encoding == "zstd":
        from backports import zstd

        return bytes(zstd.decompress(body))
    raise ValueError(f"unsupported Content-Encoding {encoding}")


def _quote(v: str) -> str:
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


class ChdbHttpFront:
    """See the module docstring."""

    def __init__(self, chdb_path: str, port: int = 0) -> None:
        self.chdb_path = chdb_path
        self._conn = chdb.connect(chdb_path)  # type: ignore[no-untyped-call]
        self._engine_lock = threading.Lock()
        self._stall = threading.Event()  # set = stalling
        self._stall_execute = False
        self._stall_inserts_only = False
        self._release = threading.Event()
        self._fail_left = 0
        self._fail_execute = False
        self._fail_inserts_only = False
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self.port = port or self._free_port()
        self.requests = 0
        self.inserts_executed = 0
        self.failed = 0
        self.stalled = 0
        self.errors: list[str] = []
        self.tmpdir = tempfile.mkdtemp(prefix="chdb-front-")

    @staticmethod
    def _free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://default:front-secret@127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ control

    def start(self) -> None:
        front = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def process_request(self, request: Any, client_address: Any) -> None:
                with front._lock:
                    front._conns.add(request)
                super().process_request(request, client_address)

            def shutdown_request(self, request: Any) -> None:
                with front._lock:
                    front._conns.discard(request)
                super().shutdown_request(request)

        class Handler(_Handler):
            pass

        Handler.front = self
        self._server = Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="chdb-http-front", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the port and cut every open connection (clients see a refused/reset connection)."""
        srv, self._server = self._server, None
        if srv is None:
            return
        srv.shutdown()
        srv.server_close()
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                c.close()
        if self._thread is not None:
            self._thread.join(5)

    def stall(self, *, execute: bool = False, inserts_only: bool = False) -> None:
        self._stall_execute = execute
        self._stall_inserts_only = inserts_only
        self._release.clear()
        self._stall.set()

    def unstall(self) -> None:
        self._stall.clear()
        self._release.set()

    def fail_next(self, n: int, *, execute: bool = False, inserts_only: bool = False) -> None:
        with self._lock:
            self._fail_left = n
            self._fail_execute = execute
            self._fail_inserts_only = inserts_only

    def close(self) -> None:
        self.unstall()
        self.stop()
        with contextlib.suppress(Exception):
            self._conn.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)  # the inserts' staging files

    # ------------------------------------------------------------------ engine

    def query(self, sql: str, fmt: str = "CSV") -> str:
        """Run SQL directly on the engine (for assertions)."""
        with self._engine_lock:
            return str(self._conn.query(sql, fmt))

    def scalar(self, sql: str) -> Any:
        out = self.query(sql, "JSONCompact")
        return json.loads(out)["data"][0][0]

    def _execute(self, sql: str, body: bytes, params: dict[str, str]) -> tuple[bytes, str, int]:
        settings = {k: v for k, v in params.items() if k not in _TRANSPORT and not k.startswith("param_")}
        if not sql and body[:6].upper() == b"INSERT":
            # clickhouse-connect puts "INSERT INTO t (cols) FORMAT Native\n" before the data
            nl = body.find(b"\n")
            sql, body = body[:nl].decode(), body[nl + 1 :]
        m = _INSERT.match(sql)
        if m is not None and body:
            target, fmt = m.group(1), m.group(2)
            path = os.path.join(self.tmpdir, f"{uuid.uuid4().hex}.bin")
            with open(path, "wb") as f:
                f.write(body)
            try:
                clause = (" SETTINGS " + ", ".join(f"{k} = {_quote(v)}" for k, v in settings.items())) if settings else ""
                stmt = f"INSERT INTO {target} FROM INFILE {_quote(path)}{clause} FORMAT {fmt}"
                with self._engine_lock:
                    self._conn.query(stmt)
                self.inserts_executed += 1
            finally:
                os.unlink(path)
            return b"", "TabSeparated", 0
        text = sql + (("\n" + body.decode()) if body else "")
        fm = _TRAILING_FORMAT.search(text)
        fmt = fm.group(1) if fm else params.get("default_format", "TabSeparated")
        if fm:
            text = text[: fm.start()]
        binds = {k[len("param_"):]: v for k, v in params.items() if k.startswith("param_")}
        with self._engine_lock:
            for k, v in settings.items():
                # Only harmless per-query settings reach here; apply them to the handle.
                with contextlib.suppress(Exception):
                    self._conn.query(f"SET {k} = {_quote(v)}")
            res = self._conn.query(text, fmt, params=binds) if binds else self._conn.query(text, fmt)
        data = res.bytes() if hasattr(res, "bytes") else bytes(res)
        return data, fmt, 0


class _Handler(BaseHTTPRequestHandler):
    front: ChdbHttpFront
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._handle(b"")

    def do_POST(self) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            body = self._read_chunked()
        else:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
        self._handle(body)

    def _read_chunked(self) -> bytes:
        out = bytearray()
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(out)
            out += self.rfile.read(size)
            self.rfile.readline()

    def _withhold(self) -> None:
        f = self.front
        f.stalled += 1
        f._release.wait()
        self.close_connection = True

    def _handle(self, raw_body: bytes) -> None:
        f = self.front
        parts = urlsplit(self.path)
        if os.environ.get("CHDB_FRONT_TRACE"):
            print("front:", self.command, self.path[:120], raw_body[:60], dict(self.headers), flush=True)
        if parts.path.rstrip("/") == "/ping":
            if f._stall.is_set() and not f._stall_inserts_only:
                self._withhold()
                return
            self._send(200, b"Ok.\n")
            return
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            body = _decode_body(raw_body, self.headers.get("Content-Encoding"))
        except Exception as e:
            f.errors.append(str(e))
            self._send(400, f"Code: 1001. DB::Exception: {e}".encode(), {"X-ClickHouse-Exception-Code": "1001"})
            return
        is_insert = body[:6].upper() == b"INSERT" or params.get("query", "")[:6].upper() == "INSERT"
        with f._lock:
            f.requests += 1
            failing = f._fail_left > 0 and (is_insert or not f._fail_inserts_only)
            if failing:
                f._fail_left -= 1
            fail_execute = f._fail_execute
        stalling = f._stall.is_set() and (is_insert or not f._stall_inserts_only)
        execute = (not failing and not stalling) or (failing and fail_execute) or (stalling and f._stall_execute)
        sql = params.get("query", "")
        result: tuple[bytes, str, int] | None = None
        error: str | None = None
        if execute:
            try:
                result = f._execute(sql, body, params)
            except Exception as e:
                error = str(e)
                f.errors.append(error)
        if stalling:
            self._withhold()
            return
        if failing:
            f.failed += 1
            self._send(500, b"Code: 999. DB::Exception: injected failure (test front)\n",
                       {"X-ClickHouse-Exception-Code": "999", "Content-Type": "text/plain"})
            return
        if error is not None:
            m = re.search(r"Code: (\d+)", error)
            code = m.group(1) if m else "1000"
            self._send(500, error.encode(), {"X-ClickHouse-Exception-Code": code, "Content-Type": "text/plain"})
            return
        assert result is not None
        data, fmt, _ = result
        self._send(200, data, {
            "X-ClickHouse-Format": fmt,
            "X-ClickHouse-Timezone": "UTC",
            "X-ClickHouse-Query-Id": params.get("query_id", ""),
            "X-ClickHouse-Summary": json.dumps({"read_rows": "0", "written_rows": "0"}),
            "Content-Type": "application/octet-stream",
        })
