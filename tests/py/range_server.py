"""A static web server for tests of plain HTTP replicas, as a CDN or nginx would serve a
folder: GET and HEAD of files, single byte ranges (`Range: bytes=a-b`, answered 206 with
Content-Range; 416 past the end), an ETag per file version (inode, size, mtime) with
`If-None-Match` answered 304, and 404 for anything missing. No listing, no writes. Python's
`http.server` does none of the ranges or validators, hence this.

Runs in a thread of the calling process and records each request (method, path, status):

    with RangeServer(folder) as srv:
        url = f"{srv.url}/replica"
        ...
        srv.counts()  # {"GET": .., "HEAD": .., "304": .., "206": ..}
"""

from __future__ import annotations

import os
import re
import threading
import urllib.parse
from collections import Counter
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class RangeServer:
    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                server._serve(self, body=False)

            def do_GET(self):
                server._serve(self, body=True)

            def do_PROPFIND(self):  # listing is what a plain server cannot do
                server._answer(self, 405, b"", {})

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> "RangeServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def counts(self, since: int = 0) -> Counter:
        """Requests since the `since`-th: by method, and by status for 206/304/404."""
        with self._lock:
            seen = self.requests[since:]
        c = Counter(m for m, _, _ in seen)
        c.update(str(s) for _, _, s in seen if s in (206, 304, 404, 416))
        return c

    def _answer(self, h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict,
                send_body: bool = True) -> None:
        with self._lock:
            self.requests.append((h.command, h.path, status))
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if send_body and body:
            h.wfile.write(body)

    def _serve(self, h: BaseHTTPRequestHandler, body: bool) -> None:
        rel = urllib.parse.unquote(urllib.parse.urlsplit(h.path).path).lstrip("/")
        path = (self.root / rel).resolve()
        if self.root not in path.parents or not path.is_file():
            return self._answer(h, 404, b"not found\n", {}, body)
        st = path.stat()
        etag = f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'
        common = {
            "ETag": etag,
            "Last-Modified": formatdate(st.st_mtime, usegmt=True),
            "Accept-Ranges": "bytes",
        }
        if h.headers.get("If-None-Match") in (etag, "*"):
            with self._lock:
                self.requests.append((h.command, h.path, 304))
            h.send_response(304)
            for k, v in common.items():
                h.send_header(k, v)
            h.end_headers()
            return
        data = path.read_bytes()
        rng = h.headers.get("Range")
        if not rng:
            return self._answer(h, 200, data, common, body)
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
        if not m or (m.group(1) == "" and m.group(2) == ""):
            return self._answer(h, 416, b"", {"Content-Range": f"bytes */{len(data)}"}, body)
        if m.group(1) == "":  # the last n bytes
            start, end = max(0, len(data) - int(m.group(2))), len(data) - 1
        else:
            start = int(m.group(1))
            end = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
        if start >= len(data) or start > end:
            return self._answer(h, 416, b"", {"Content-Range": f"bytes */{len(data)}"}, body)
        part = data[start:end + 1]
        headers = dict(common, **{"Content-Range": f"bytes {start}-{end}/{len(data)}"})
        self._answer(h, 206, part, headers, body)


if __name__ == "__main__":
    import sys
    import time
    with RangeServer(Path(sys.argv[1] if len(sys.argv) > 1 else ".")) as srv:
        print(srv.url, flush=True)
        while True:
            time.sleep(3600)
