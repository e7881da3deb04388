"""A small HTTP reverse proxy for S3 tests and benchmarks: forwards every request unchanged
(method, path, headers, body: SigV4 signatures stay valid) to an upstream such as moto, after
a fixed delay, and records each request (method, path, range, status, bytes, start, end).

Fault injection for tests: `stall(n, seconds)` makes the next n ranged GETs wait `seconds`
longer (a slow answer, for hedged reads). Runs in a thread of the calling process:

    with LatencyProxy(s3.endpoint, delay=0.02) as proxy:
        url = f"s3://bucket/db?endpoint={proxy.endpoint}&force-path-style=true"
        ...
        proxy.counts()  # {"get": .., "list": .., "bytes": .., "get_bytes": .., "requests": ..}
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
              "trailer", "upgrade"}


@dataclass
class Request:
    method: str
    path: str
    range: Optional[str]
    status: int
    bytes: int
    start: float
    end: float
    # The x-amz-server-side-encryption* headers the request carried (name: value).
    sse: dict = field(default_factory=dict)
    # Every header the request carried, names in lower case.
    headers: dict = field(default_factory=dict)

    @property
    def is_list(self) -> bool:
        return self.method == "GET" and "list-type" in urllib.parse.urlsplit(self.path).query

    @property
    def is_get(self) -> bool:
        return self.method == "GET" and not self.is_list


class LatencyProxy:
    def __init__(self, upstream: str, delay: float = 0.02):
        u = urllib.parse.urlsplit(upstream)
        self.upstream = (u.hostname, u.port or 80)
        self.delay = delay
        self.log: list[Request] = []
        self._lock = threading.Lock()
        self._stalls: list[float] = []
        self._local = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def setup(self):
                super().setup()
                # Headers and body go out in separate writes: without NODELAY, Nagle and the
                # peer's delayed ACK add ~40 ms to every answer.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _forward(self):
                proxy._forward(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "LatencyProxy":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def stall(self, n: int, seconds: float) -> None:
        """The next n ranged GETs wait `seconds` on top of the delay."""
        with self._lock:
            self._stalls.extend([seconds] * n)

    def reset(self) -> None:
        with self._lock:
            self.log = []

    def counts(self, since: int = 0) -> dict:
        """Requests recorded from log position `since` on."""
        with self._lock:
            log = self.log[since:]
        return {
            "requests": len(log),
            "get": sum(r.is_get for r in log),
            "list": sum(r.is_list for r in log),
            "bytes": sum(r.bytes for r in log),
            "get_bytes": sum(r.bytes for r in log if r.is_get),
        }

    def round_trips(self, since: int = 0) -> int:
        """Sequential waves of requests: a request that starts after every request of the
        current wave has ended begins a new wave (parallel requests count once)."""
        with self._lock:
            log = sorted(self.log[since:], key=lambda r: r.start)
        waves, wave_end = 0, None
        for r in log:
            if wave_end is None or r.start >= wave_end:
                waves += 1
                wave_end = r.end
            else:
                wave_end = max(wave_end, r.end)
        return waves

    def _upstream_conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(*self.upstream, timeout=60)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.conn = conn
        return conn

    def _forward(self, h: BaseHTTPRequestHandler) -> None:
        start = time.monotonic()
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        with self._lock:
            stall = self._stalls and h.command == "GET" and h.headers.get("Range")
            extra = self._stalls.pop(0) if stall else 0.0
        time.sleep(self.delay + extra)
        headers = {k: v for k, v in h.headers.items() if k.lower() not in HOP_BY_HOP}
        for attempt in range(2):
            conn = self._upstream_conn()
            try:
                conn.request(h.command, h.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    h.send_error(502)
                    return
        try:
            h.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(data)
            h.wfile.flush()
        except OSError:
            pass  # the client gave up (a hedged read that lost the race)
        with self._lock:
            sse = {k.lower(): v for k, v in h.headers.items()
                   if k.lower().startswith("x-amz-server-side-encryption")}
            self.log.append(Request(h.command, h.path, h.headers.get("Range"), resp.status,
                                    len(data) if h.command != "HEAD" else 0, start,
                                    time.monotonic(), sse,
                                    {k.lower(): v for k, v in h.headers.items()}))
