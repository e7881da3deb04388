"""moto's S3 server (start/stop on a free port, buckets, objects) and plain or SigV4-signed
HTTP without proxies; S3 URLs and key listings."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

from harness.common import (AWS_TEST_ENV, HarnessError, _must_exist, _spawn, child_env, tail,
                            venv_dir)


def moto_server_bin() -> Path:
    p = os.environ.get("MOTO_SERVER")
    return _must_exist(Path(p) if p else venv_dir() / "bin" / "moto_server", "moto_server")


# --------------------------------------------------------------------------------------------
# HTTP


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_NO_PROXY_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method: str, url: str, data: Optional[bytes] = None, timeout: float = 10,
         headers: Optional[dict] = None, sign: bool = False) -> tuple[int, bytes]:
    """Plain HTTP request without proxies; returns (status, body) also for 4xx/5xx.
    sign=True adds an AWS SigV4 signature with the test credentials (moto checks none, but
    refuses anonymous object reads)."""
    headers = dict(headers or {})
    if data is not None:
        # (urllib would say x-www-form-urlencoded, and moto would parse the body as a form)
        headers.setdefault("Content-Type", "application/octet-stream")
    if sign:
        headers.update(sigv4_headers(method, url, data or b""))
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _NO_PROXY_OPENER.open(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def sigv4_headers(method: str, url: str, body: bytes, service: str = "s3",
                  region: str = "us-east-1") -> dict:
    """Headers (Authorization, x-amz-date, x-amz-content-sha256) of an AWS SigV4 request."""
    import hmac
    u = urllib.parse.urlsplit(url)
    now = time.gmtime()
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", now)
    day = amz_date[:8]
    payload_hash = hashlib.sha256(body).hexdigest()
    q = sorted(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
    canonical_query = "&".join(f"{urllib.parse.quote(k, safe='-_.~')}="
                               f"{urllib.parse.quote(v, safe='-_.~')}" for k, v in q)
    hdrs = {"host": u.netloc, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed = ";".join(sorted(hdrs))
    canonical = "\n".join([method, urllib.parse.quote(urllib.parse.unquote(u.path or "/"),
                                                      safe="/-_.~"),
                           canonical_query,
                           "".join(f"{k}:{hdrs[k]}\n" for k in sorted(hdrs)), signed,
                           payload_hash])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])

    def h(key, msg):
        return hmac.new(key, msg.encode(), hashlib.sha256).digest()

    key = h(h(h(h(("AWS4" + AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"]).encode(), day), region),
              service), "aws4_request")
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return {"x-amz-date": amz_date, "x-amz-content-sha256": payload_hash,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={AWS_TEST_ENV['AWS_ACCESS_KEY_ID']}/"
                             f"{scope}, SignedHeaders={signed}, Signature={sig}"}


# --------------------------------------------------------------------------------------------
# S3 URLs and listings


def parse_s3_url(url: str) -> tuple[str, str, str]:
    """s3://BUCKET/PREFIX?endpoint=...  ->  (endpoint, bucket, prefix)"""
    u = urllib.parse.urlsplit(url)
    q = urllib.parse.parse_qs(u.query)
    endpoint = q.get("endpoint", [""])[0]
    if not endpoint:
        raise HarnessError(f"no endpoint in {url}")
    return endpoint.rstrip("/"), u.netloc, u.path.strip("/")


def s3_list_keys(endpoint: str, bucket: str, prefix: str = "") -> list[tuple[str, int]]:
    """ListObjectsV2 without signing (moto accepts it): [(key, size)]."""
    out, token = [], None
    while True:
        q = {"list-type": "2", "prefix": prefix}
        if token:
            q["continuation-token"] = token
        status, body = http("GET", f"{endpoint}/{bucket}?{urllib.parse.urlencode(q)}", sign=True)
        if status == 404:
            return []
        if status != 200:
            raise HarnessError(f"list {bucket}/{prefix}: HTTP {status}: {body[:300]!r}")
        root = ET.fromstring(body)
        # The namespace as the answer has it (s3rver's differs from S3's).
        ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        for c in root.findall(f"{ns}Contents"):
            out.append((c.findtext(f"{ns}Key"), int(c.findtext(f"{ns}Size"))))
        if root.findtext(f"{ns}IsTruncated") == "true":
            token = root.findtext(f"{ns}NextContinuationToken")
        else:
            return out


# --------------------------------------------------------------------------------------------
# moto S3 server


class S3Server:
    """moto_server on 127.0.0.1:<free port>."""

    def __init__(self, workdir: os.PathLike | str):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "moto.log"
        self.port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self._buckets: set[str] = set()
        self._seq = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> "S3Server":
        binary = moto_server_bin()
        for _attempt in range(3):
            self.port = free_port()
            log = open(self.log_path, "ab")
            self.proc = _spawn(
                [str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=child_env(), start_new_session=True)
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    http("GET", self.endpoint + "/", timeout=2)
                    return self
                except (OSError, urllib.error.URLError):
                    time.sleep(0.1)
            self.stop()  # died (port taken?) or too slow: try another port
        raise HarnessError(f"moto_server did not start:\n{tail(self.log_path)}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def make_bucket(self, name: str) -> str:
        if name not in self._buckets:
            status, body = http("PUT", f"{self.endpoint}/{name}", sign=True)
            if status not in (200, 409):
                raise HarnessError(f"create bucket {name}: HTTP {status} {body[:300]!r}")
            self._buckets.add(name)
        return name

    def new_bucket(self, stem: str = "bkt") -> str:
        """A fresh, uniquely named bucket."""
        self._seq += 1
        return self.make_bucket(f"{stem}-{os.getpid()}-{self._seq}".lower())

    def replica_url(self, bucket: str, prefix: str = "db") -> str:
        return f"s3://{bucket}/{prefix}?endpoint={self.endpoint}&force-path-style=true"

    def list_keys(self, bucket: str, prefix: str = "") -> list[tuple[str, int]]:
        return s3_list_keys(self.endpoint, bucket, prefix)

    def get(self, bucket: str, key: str) -> bytes:
        status, body = http("GET", f"{self.endpoint}/{bucket}/{urllib.parse.quote(key)}",
                            sign=True)
        if status != 200:
            raise HarnessError(f"GET {bucket}/{key}: HTTP {status}")
        return body

    def put(self, bucket: str, key: str, data: bytes) -> None:
        status, body = http("PUT", f"{self.endpoint}/{bucket}/{urllib.parse.quote(key)}", data,
                            sign=True)
        if status != 200:
            raise HarnessError(f"PUT {bucket}/{key}: HTTP {status} {body[:300]!r}")

    def delete(self, bucket: str, key: str) -> None:
        status, body = http("DELETE", f"{self.endpoint}/{bucket}/{urllib.parse.quote(key)}",
                            sign=True)
        if status not in (200, 204):
            raise HarnessError(f"DELETE {bucket}/{key}: HTTP {status} {body[:300]!r}")
