"""A fault-injecting HTTP reverse proxy for S3 tests: forwards requests unchanged (SigV4
signatures stay valid) to an upstream such as moto, and injects the failures real object
stores have, chosen at run time, per request:

    status      answer an error (default 503 SlowDown, S3's XML body) without forwarding
    reset       reset the connection before forwarding (the request never arrives)
    drop        forward (the store applies the request), then reset the connection: the
                answer is lost
    truncate    forward, then send the headers and only part of the body
    stall       wait `seconds` before forwarding (the client may give up first)
    latency     wait `seconds` more, then answer normally
    empty       answer a listing with an empty result without forwarding (a store whose
                listing does not show new objects yet: eventual consistency)
    unconditional  forward without the If-None-Match header (a proxy that strips it, or a
                store that ignores it: a create-only write overwrites)

Each fault has a rate (probability per matching request), optionally a method
("GET", "PUT", "HEAD", "DELETE", "POST", or "LIST" for listings), a path substring, and a
count limit. Faults are tried in the order added; the first that fires wins. Stdlib only;
runs in a thread of the calling process.

    with FaultProxy(s3.endpoint, seed=1) as proxy:
        proxy.add("status", rate=0.15)
        proxy.add("drop", rate=0.08, method="PUT")
        ...
        proxy.heal()            # no more faults
        proxy.injected          # Counter of faults injected, by kind
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Optional

from latency_proxy import HOP_BY_HOP, LatencyProxy, Request

KINDS = ("status", "reset", "drop", "truncate", "stall", "latency", "empty", "unconditional")


@dataclass
class Fault:
    kind: str
    rate: float = 1.0
    method: Optional[str] = None
    path: Optional[str] = None
    count: Optional[int] = None
    status: int = 503
    code: str = "SlowDown"
    seconds: float = 2.0
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.count is not None and self.fired >= self.count:
            return False
        if self.method is not None:
            is_list = method == "GET" and "list-type" in urllib.parse.urlsplit(path).query
            m = "LIST" if is_list else method
            if m != self.method:
                return False
        return self.path is None or self.path in path


def _reset(h: BaseHTTPRequestHandler) -> None:
    """Closes the client's connection with a TCP reset."""
    h.close_connection = True
    try:
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.connection.close()
    except OSError:
        pass


class FaultProxy(LatencyProxy):
    def __init__(self, upstream: str, delay: float = 0.0, seed: int = 0):
        super().__init__(upstream, delay=delay)
        self.faults: list[Fault] = []
        self.injected: Counter = Counter()
        self._rng = random.Random(seed)

    def add(self, kind: str, **kw) -> Fault:
        if kind not in KINDS:
            raise ValueError(kind)
        f = Fault(kind, **kw)
        with self._lock:
            self.faults.append(f)
        return f

    def heal(self) -> None:
        """No more faults from now on (requests in flight finish as they were)."""
        with self._lock:
            self.faults = []

    def _pick(self, method: str, path: str) -> Optional[Fault]:
        with self._lock:
            for f in self.faults:
                if f.matches(method, path) and self._rng.random() < f.rate:
                    f.fired += 1
                    self.injected[f.kind] += 1
                    return f
        return None

    def _forward(self, h: BaseHTTPRequestHandler) -> None:
        start = time.monotonic()
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        fault = self._pick(h.command, h.path)
        kind = fault.kind if fault else None
        if kind == "status":
            xml = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{fault.code}</Code>"
                   f"<Message>injected by the test proxy</Message></Error>").encode()
            try:
                h.send_response(fault.status)
                h.send_header("Content-Type", "application/xml")
                h.send_header("Content-Length", str(len(xml)))
                h.end_headers()
                if h.command != "HEAD":
                    h.wfile.write(xml)
                h.wfile.flush()
            except OSError:
                pass
            self._record(h, fault.status, 0, start)
            return
        if kind == "empty":
            xml = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult "
                   "xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><KeyCount>0</KeyCount>"
                   "<MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>"
                   ).encode()
            try:
                h.send_response(200)
                h.send_header("Content-Type", "application/xml")
                h.send_header("Content-Length", str(len(xml)))
                h.end_headers()
                h.wfile.write(xml)
                h.wfile.flush()
            except OSError:
                pass
            self._record(h, 200, len(xml), start)
            return
        if kind == "reset":
            _reset(h)
            self._record(h, 0, 0, start)
            return
        if kind in ("stall", "latency"):
            time.sleep(fault.seconds)
        time.sleep(self.delay)
        resp = self._upstream(h, body, strip=("if-none-match",) if kind == "unconditional" else ())
        if resp is None:
            return
        status, reason, headers, data = resp
        if kind == "drop":
            _reset(h)
            self._record(h, 0, 0, start)
            return
        try:
            h.send_response(status, reason)
            for k, v in headers:
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            if h.command != "HEAD":
                if kind == "truncate" and data:
                    h.wfile.write(data[: len(data) // 2])
                    h.wfile.flush()
                    _reset(h)
                    self._record(h, status, len(data) // 2, start)
                    return
                h.wfile.write(data)
            h.wfile.flush()
        except OSError:
            pass
        self._record(h, status, len(data) if h.command != "HEAD" else 0, start)

    def _upstream(self, h: BaseHTTPRequestHandler, body, strip=()):
        import http.client
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() not in HOP_BY_HOP and k.lower() not in strip}
        for attempt in range(2):
            conn = self._upstream_conn()
            try:
                conn.request(h.command, h.path, body=body, headers=headers)
                r = conn.getresponse()
                return r.status, r.reason, r.getheaders(), r.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    try:
                        h.send_error(502)
                    except OSError:
                        pass
                    return None
        return None

    def _record(self, h, status, nbytes, start):
        with self._lock:
            self.log.append(Request(h.command, h.path, h.headers.get("Range"), status, nbytes,
                                    start, time.monotonic()))
