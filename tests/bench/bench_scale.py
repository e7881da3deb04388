#!/usr/bin/env python3
"""Scale benchmark (issue "Thousands of databases per process"): what N databases cost one
process while they sit idle, as read replicas and as primaries.

moto's S3 server runs on 127.0.0.1 with a counting proxy in front of it (`CountingProxy`:
tests/py/latency_proxy.py's LatencyProxy with no delay, a bounded pool of connections to moto
and a deep listen backlog, so that thousands of client connections do not take moto down);
every request the measured process makes goes through the proxy and is counted by kind (LIST,
GET, PUT, HEAD, ...) and by replica (the first component of the key or listing prefix).
Set-up requests (copying) go to moto directly.

The rig has a ceiling: moto is one Python process and serves about 200-350 requests a second
on a 2-core machine. When the process under test asks for more (a thousand replicas opened
at once, each polling), requests queue in the proxy; a request whose client gave up waiting
before its turn is not forwarded (counted as "abandoned", as S3 would have answered it long
before), and `--verbose` prints the rig's state every 5 s. Opens that fail are counted and
reported, not fatal; a phase stops opening after --open-deadline seconds.

Set-up: ONE small database (table `t`, 100 rows) is written by our extension as a primary to
`s3://BUCKET/t0`; its objects are then copied to `t1` ... `t{N-1}` (GET once, PUT to each prefix,
straight to moto), so every replica is a complete, readable copy. (The seed writer goes
through the writer's proxy: a primary's state names its replica by the whole URL, endpoint
included, and the busy phase's writer reopens the same local database.)

For each N of --counts, three phases, each in a fresh /usr/bin/python3 child that loads the
extension (RLIMIT_NOFILE raised to the hard limit):

  replicas   N connections `file:t{i}.db?vfs=litestream&replica_url=s3://BUCKET/t{i}?...`,
             one query on each (count(*) of `t`, checked), then --idle-seconds idle. Measured
             in the child: RSS (VmRSS) and threads (/proc/self/status) and descriptors before
             and after opening, CPU (getrusage user+sys) over the idle window; in the parent:
             the proxy's requests in that window, per replica-hour and in dollars at S3 prices
             (LIST, PUT, POST $0.005 per 1,000; GET, HEAD $0.0004 per 1,000; DELETE free).
             The window starts right after the opens, so it includes the back-off ramp of
             `poll_interval_max` (1 s, 2 s, 4 s, ... 30 s): an upper bound on the steady rate.
  busy       then, in the same child: a writer process (role=primary on t0's local database,
             through a second counting proxy) commits one row with its wall-clock time every
             --commit-interval on average (jittered 0.5x-1.5x, so that commits do not stay in
             one phase of the reader's 1 s polls); the child's t0 connection polls `SELECT id, ts FROM t WHERE
             id > ?` every --poll-ms for --busy-seconds. Reported: commit-to-visible latency
             (median, max), the readers' requests in that window (t0, and the N-1 others that
             have by now been idle for longer: closer to their steady rate), the writer's.
  primaries  N connections `role=primary`, each its own local file and replica prefix `p{i}`
             (a bucket per N), each creating `t` and committing one row; open time; then a
             settle time (--settle-seconds, and until every primary has shipped), whose
             requests are reported as start-up (from the first open: when opening takes
             longer than the first compaction level, 30 s, compaction is in it too); then
             --idle-seconds idle, measured as above per database-hour; then close time.

A native control (`native`: N plain SQLite connections to a local copy of the same database,
same query, extension loaded) gives SQLite's own memory per connection.

Run: /usr/bin/python3 tests/bench/bench_scale.py [--counts 10,100,1000] [--idle-seconds 30]
     [--out FILE] [--ext PATH] [--extra-params "a=1&b=2"]
--extra-params is appended to every litestream URI (readers, primaries, the writer);
--replica-params and --primary-params to the readers' or the primaries' (and writer's) only.
The report (markdown) goes to --out (default /tmp/bench_scale.md) and stdout; the raw numbers
to the same name with .json. README.md is never touched (--no-readme is accepted for
symmetry with the other benches).
"""
import argparse
import http.client
import json
import math
import os
import queue
import re
import resource
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "py"))
from harness.common import REPO_ROOT, child_env  # noqa: E402
from harness.s3 import S3Server  # noqa: E402
from harness.sqlite_hosts import child_python, ext_path, vfs_uri  # noqa: E402
import latency_proxy  # noqa: E402
from latency_proxy import LatencyProxy  # noqa: E402

# S3 Standard request prices (us-east-1), dollars per request.
PRICES = {"list": 0.005 / 1000, "put": 0.005 / 1000, "post": 0.005 / 1000,
          "get": 0.0004 / 1000, "head": 0.0004 / 1000, "delete": 0.0, "other": 0.0}
KINDS = ["list", "get", "put", "head", "post", "delete", "other"]
SEED_ROWS = 100

# ------------------------------------------------------------------------------------------
# Child processes. Each prints JSON lines ({"event": ...}) on stdout and reads commands from
# stdin, one a line. The extension never writes to stdout (its log goes to stderr).

COMMON = r"""
import json, os, queue, resource, sqlite3, sys, threading, time

def emit(event, **kw):
    kw["event"] = event
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()

def proc_status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM", "Threads"):
                out[k] = int(v.split()[0])
    fds = os.listdir("/proc/self/fd")
    socks = 0
    for fd in fds:
        try:
            socks += os.readlink("/proc/self/fd/" + fd).startswith("socket:")
        except OSError:
            pass
    return {"rss_kb": out.get("VmRSS"), "hwm_kb": out.get("VmHWM"),
            "threads": out.get("Threads"), "fds": len(fds), "sockets": socks,
            "mono": time.monotonic()}

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

cmds = queue.Queue()
def _stdin():
    for line in sys.stdin:
        cmds.put(line.strip())
    cmds.put("eof")
threading.Thread(target=_stdin, daemon=True).start()

cfg = json.load(open(sys.argv[1]))
s_start = proc_status()
if cfg.get("ext"):
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(cfg["ext"])
s_loaded = proc_status()
"""

READERS = COMMON + r"""
uris = cfg["uris"]
conns, results, failures = [], [], []
t_open0 = time.monotonic()
slowest = (0.0, None)
for i, uri in enumerate(uris):
    if time.monotonic() - t_open0 > cfg["open_deadline"]:
        break
    s = time.monotonic()
    try:
        c = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        results.append(c.execute(cfg["query"]).fetchone()[0])
        conns.append(c)
    except Exception as e:
        results.append(None)
        conns.append(None)
        failures.append((i, time.monotonic() - s, str(e)[:400]))
    d = time.monotonic() - s
    if d > slowest[0]:
        slowest = (d, i)
    if cfg.get("progress") and (i + 1) % cfg["progress"] == 0:
        emit("progress", opened=i + 1, failed=len(failures), elapsed=time.monotonic() - t_open0)
t_open1 = time.monotonic()
s_opened = proc_status()
emit("opened", t0=t_open0, t1=t_open1, results=results, slowest=slowest, failures=failures,
     attempted=len(results),
     s_start=s_start, s_loaded=s_loaded, s_opened=s_opened)

c0, w0 = cpu(), time.monotonic()
time.sleep(cfg["idle"])
c1, w1 = cpu(), time.monotonic()
emit("idle", t0=w0, t1=w1, cpu=c1 - c0, s_idle=proc_status())

def poll_new(conn, last):
    return conn.execute("SELECT id, ts FROM t WHERE id > ? ORDER BY id", (last,)).fetchall()

seen, last_id, start_wall = [], None, None
while True:
    cmd = cmds.get()
    if cmd.startswith("busy") and conns[0] is None:
        emit("busy", error="t0 did not open")
    elif cmd.startswith("await") and conns[0] is None:
        emit("awaited", seen=[], last_id=None)
    elif cmd.startswith("busy"):
        secs = float(cmd.split()[1])
        b0, bc0 = time.monotonic(), cpu()
        last_id = conns[0].execute("SELECT max(id) FROM t").fetchone()[0] or 0
        start_wall = time.time()
        while time.monotonic() - b0 < secs:
            for rid, ts in poll_new(conns[0], last_id):
                seen.append((rid, ts, time.time()))
                last_id = rid
            time.sleep(cfg["poll_ms"] / 1000)
        b1, bc1 = time.monotonic(), cpu()
        emit("busy", t0=b0, t1=b1, cpu=bc1 - bc0, start_wall=start_wall,
             s_busy=proc_status())
    elif cmd.startswith("await"):
        want = int(cmd.split()[1])
        deadline = time.monotonic() + 30
        while last_id < want and time.monotonic() < deadline:
            for rid, ts in poll_new(conns[0], last_id):
                seen.append((rid, ts, time.time()))
                last_id = rid
            time.sleep(cfg["poll_ms"] / 1000)
        emit("awaited", seen=seen, last_id=last_id)
    elif cmd in ("exit", "eof"):
        stats = None
        if cfg.get("ext") and conns[0] is not None:
            try:
                stats = json.loads(conns[0].execute("PRAGMA litestream_stats").fetchone()[0])
            except Exception as e:
                stats = {"error": repr(e)}
        t = time.monotonic()
        for c in conns:
            if c is not None:
                c.close()
        emit("closed", close_s=time.monotonic() - t, stats0=stats)
        break
"""

PRIMARIES = COMMON + r"""
uris = cfg["uris"]
conns, open_s, failures = [], [], []
t_open0 = time.monotonic()
for i, uri in enumerate(uris):
    if time.monotonic() - t_open0 > cfg["open_deadline"]:
        break
    s = time.monotonic()
    try:
        c = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                            timeout=30)
        c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, ts REAL, v TEXT)")
        c.execute("INSERT INTO t(ts, v) VALUES (?, ?)", (time.time(), "x" * 100))
        conns.append(c)
    except Exception as e:
        failures.append((i, time.monotonic() - s, str(e)[:400]))
    open_s.append(time.monotonic() - s)
    if cfg.get("progress") and (i + 1) % cfg["progress"] == 0:
        emit("progress", opened=i + 1, failed=len(failures), elapsed=time.monotonic() - t_open0)
t_open1 = time.monotonic()
s_opened = proc_status()
emit("opened", t0=t_open0, t1=t_open1, open_s=open_s, failures=failures, attempted=len(open_s),
     opened=len(conns), s_start=s_start,
     s_loaded=s_loaded, s_opened=s_opened)

def summary():
    pending, errors, stopped, shipped = 0, {}, {}, []
    for c in conns:
        s = json.loads(c.execute("PRAGMA litestream_stats").fetchone()[0])
        pending += bool(s.get("pending"))
        if s.get("last_error"):
            errors[str(s["last_error"])[:300]] = errors.get(str(s["last_error"])[:300], 0) + 1
        if s.get("stopped"):
            stopped[str(s["stopped"])[:300]] = stopped.get(str(s["stopped"])[:300], 0) + 1
        shipped.append(s.get("shipped_txid"))
    return {"pending": pending, "errors": errors, "stopped": stopped,
            "unshipped": sum(1 for x in shipped if not x)}

# Settle: at least settle seconds, and until nothing is pending (bounded).
settle_end = t_open1 + cfg["settle"]
while True:
    now = time.monotonic()
    if now >= settle_end:
        sm = summary()
        if sm["pending"] == 0 or now - t_open1 > cfg["settle_max"]:
            break
    time.sleep(min(0.5, max(0.05, settle_end - now)))
t_settled = time.monotonic()
emit("settled", t=t_settled, waited=t_settled - t_open1, summary=sm, s_settled=proc_status())

c0, w0 = cpu(), time.monotonic()
time.sleep(cfg["idle"])
c1, w1 = cpu(), time.monotonic()
s_idle = proc_status()
emit("idle", t0=w0, t1=w1, cpu=c1 - c0, s_idle=s_idle, summary=summary())

t = time.monotonic()
for c in conns:
    c.close()
emit("closed", close_s=time.monotonic() - t)
"""

WRITER = r"""
import json, random, sqlite3, sys, threading, time
cfg = json.load(open(sys.argv[1]))
def emit(event, **kw):
    kw["event"] = event
    sys.stdout.write(json.dumps(kw) + "\n"); sys.stdout.flush()
stop = threading.Event()
def _stdin():
    for line in sys.stdin:
        if line.strip() == "stop":
            break
    stop.set()
threading.Thread(target=_stdin, daemon=True).start()
l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(cfg["ext"])
t = time.monotonic()
c = sqlite3.connect(cfg["uri"], uri=True, isolation_level=None, timeout=30)
c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, ts REAL, v TEXT)")
stats = lambda: json.loads(c.execute("PRAGMA litestream_stats").fetchone()[0])
emit("opened", open_s=time.monotonic() - t)
commits, k, start = [], 0, time.monotonic()
if cfg.get("rows"):
    c.execute("BEGIN")
    for i in range(cfg["rows"]):
        c.execute("INSERT INTO t(ts, v) VALUES (?, ?)", (time.time(), "seed %d" % i))
    c.execute("COMMIT")
    while stats().get("pending"):
        time.sleep(0.05)
    stop.set()
# Commits at jittered intervals (uniform 0.5x..1.5x, mean `interval`): a writer exactly in
# step with the reader's 1 s polls would measure one phase only.
rnd = random.Random(7)
due = start
while not stop.is_set():
    ts = time.time()
    cur = c.execute("INSERT INTO t(ts, v) VALUES (?, ?)", (ts, "busy"))
    commits.append((cur.lastrowid, ts))
    k += 1
    due += cfg["interval"] * rnd.uniform(0.5, 1.5)
    stop.wait(max(0.0, due - time.monotonic()))
s = stats()
t = time.monotonic()
c.close()
emit("done", commits=commits, stats=s, close_s=time.monotonic() - t,
     last_id=commits[-1][0] if commits else None)
"""


class Child:
    """A child process speaking the JSON-lines protocol above."""

    def __init__(self, script: str, cfg: dict, log: Path, cwd: Path, env: dict):
        self.log_path = log
        self.log = open(log, "wb")
        # The configuration goes in a file: a thousand URIs are more than one argument may hold.
        cfg_path = log.with_suffix(".json")
        cfg_path.write_text(json.dumps(cfg))
        self.proc = subprocess.Popen([child_python(), "-c", script, str(cfg_path)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, cwd=cwd, env=env, text=True)
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            line = line.strip()
            if line.startswith("{"):
                try:
                    self.events.put(json.loads(line))
                    continue
                except json.JSONDecodeError:
                    pass
            if line:
                print(f"  child stdout: {line[:300]}", flush=True)
        self.events.put(None)

    def expect(self, event: str, timeout: float, on_other=None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                ev = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise RuntimeError(f"no '{event}' from the child within {timeout:.0f} s; "
                                   f"stderr:\n{self.stderr_tail()}")
            if ev is None:
                self.proc.wait()
                raise RuntimeError(f"child exited ({self.proc.returncode}) before '{event}'; "
                                   f"stderr:\n{self.stderr_tail()}")
            if ev["event"] == event:
                return ev
            if on_other:
                on_other(ev)

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = 120) -> int:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = self.proc.wait()
        self.log.close()
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def stderr_tail(self, n: int = 4000) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def stderr_lines(self) -> list:
        if not self.log.closed:
            self.log.flush()
        return [x for x in self.log_path.read_text(errors="replace").splitlines() if x.strip()]


# ------------------------------------------------------------------------------------------
# Requests


def kind(r) -> str:
    if r.method == "GET":
        return "list" if r.is_list else "get"
    return {"PUT": "put", "HEAD": "head", "POST": "post", "DELETE": "delete"}.get(r.method,
                                                                                  "other")


def replica_of(r) -> str:
    """The replica prefix a request is about: the first component of the key, or of the
    listing's prefix; "" for bucket-level requests."""
    return replica_of_path(r.path)


def replica_of_path(path: str) -> str:
    u = urllib.parse.urlsplit(path)
    parts = urllib.parse.unquote(u.path).lstrip("/").split("/", 2)
    if len(parts) >= 2 and parts[1]:
        return parts[1]
    p = urllib.parse.parse_qs(u.query).get("prefix", [""])[0]
    return p.split("/", 1)[0]


def _shape(r, rep: str) -> str:
    """A request's key (or listing prefix and start-after) with the replica name as {r} and
    runs of digits as #: what kind of object it is about."""
    u = urllib.parse.urlsplit(r.path)
    q = urllib.parse.parse_qs(u.query, keep_blank_values=True)
    if "list-type" in q:
        text = "list " + q.get("prefix", [""])[0]
        if q.get("start-after"):
            text += " after " + q["start-after"][0]
        if q.get("delimiter"):
            text += " delim " + q["delimiter"][0]
    else:
        text = urllib.parse.unquote(u.path).lstrip("/").split("/", 1)[-1]
        if u.query:
            text += "?" + "&".join(sorted(k for k in q))
    if rep:
        text = text.replace(rep + "/", "{r}/")
    return re.sub(r"[0-9a-f]{4,}|[0-9]+", "#", text)


def window(proxy: LatencyProxy, t0: float, t1: float, only=None) -> dict:
    """Requests that started in [t0, t1] (monotonic), by kind; `only(replica) -> bool`
    selects replicas. Also the non-2xx statuses and the shapes of the listing prefixes."""
    with proxy._lock:
        log = list(proxy.log)
    out = {k: 0 for k in KINDS}
    statuses, shapes, replicas, per_s, per_5s = {}, {}, set(), {}, {}
    not_modified = 0
    for r in log:
        if not (t0 <= r.start <= t1):
            continue
        rep = replica_of(r)
        if only is not None and not only(rep):
            continue
        k = kind(r)
        out[k] += 1
        replicas.add(rep)
        per_s[int(r.end)] = per_s.get(int(r.end), 0) + 1
        b5 = int((r.start - t0) // 5)
        per_5s[b5] = per_5s.get(b5, 0) + 1
        shape = f"{r.method} {_shape(r, rep)}"
        shapes[shape] = shapes.get(shape, 0) + 1
        if r.status == 304:
            not_modified += 1  # a conditional GET that found nothing new (billed as a GET)
        elif not 200 <= r.status < 300:
            key = f"{shape} -> {r.status}"
            if r.status == 412 and "probes/create-only" in shape:
                key += " (expected: check_conditional_writes)"
            elif r.status >= 500:
                key += " (moto)"
            statuses[key] = statuses.get(key, 0) + 1
    out["total"] = sum(out[k] for k in KINDS)
    out["not_modified"] = not_modified
    out["abandoned"] = sum(1 for t, path in list(getattr(proxy, "abandoned_at", []))
                           if t0 <= t <= t1 and (only is None or only(replica_of_path(path))))
    out["peak_per_s"] = max(per_s.values()) if per_s else 0
    out["per_5s"] = [per_5s.get(i, 0) for i in range(int((t1 - t0) // 5) + 1)]
    out["dollars"] = sum(out[k] * PRICES[k] for k in KINDS)
    out["statuses"] = statuses
    out["shapes"] = dict(sorted(shapes.items(), key=lambda kv: -kv[1])[:25])
    out["replicas_seen"] = len(replicas)
    out["seconds"] = t1 - t0
    return out


def per_hour(w: dict, units: int) -> dict:
    """Requests (and dollars) per unit-hour from a window."""
    f = 3600.0 / max(w["seconds"], 1e-9) / max(units, 1)
    out = {k: w[k] * f for k in KINDS}
    out["total"] = w["total"] * f
    out["dollars"] = w["dollars"] * f
    return out


class CountingProxy(LatencyProxy):
    """The tests' LatencyProxy (same log, same counting), made to carry a thousand clients:

    - at most `upstream` connections to moto, shared by every client connection (the base
      class keeps one per client connection: a thousand replicas, each with its own HTTP
      connection, made moto run a thousand threads and stop answering);
    - a listen backlog of 4096 (socketserver's 5 drops the SYNs of clients that connect at
      once, and their 1 s retransmits would be the proxy's latency, not theirs);
    - errors of client connections counted (`client_errors`), not printed.
    """

    def __init__(self, upstream: str, delay: float = 0.0, connections: int = 16):
        super().__init__(upstream, delay)
        self.server.socket.listen(4096)
        self._idle: list = []
        self._slots = threading.BoundedSemaphore(connections)
        self.client_errors = 0
        self.client_error_kinds: dict = {}
        self.upstream_errors = 0
        self.abandoned = 0
        self.abandoned_at: list = []

        def handle_error(request, client_address):
            self.client_errors += 1
            e = sys.exc_info()[1]
            key = f"{type(e).__name__}: {str(e)[:80]}"
            self.client_error_kinds[key] = self.client_error_kinds.get(key, 0) + 1
        self.server.handle_error = handle_error

    @staticmethod
    def _client_gone(h) -> bool:
        try:
            p = select.poll()  # not select(): descriptors above 1023 are the rule here
            p.register(h.connection, select.POLLIN)
            return bool(p.poll(0)) and h.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _checkout(self):
        with self._lock:
            if self._idle:
                return self._idle.pop()
        conn = http.client.HTTPConnection(*self.upstream, timeout=120)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _forward(self, h) -> None:
        start = time.monotonic()
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else None
        if self.delay:
            time.sleep(self.delay)
        headers = {k: v for k, v in h.headers.items()
                   if k.lower() not in latency_proxy.HOP_BY_HOP}
        resp = data = None
        with self._slots:
            if self._client_gone(h):
                # The client gave up waiting (its timeout) while the request queued here:
                # S3 would have answered long ago, and forwarding it now would only make moto
                # spend its time on answers nobody reads.
                with self._lock:
                    self.abandoned += 1
                    self.abandoned_at.append((time.monotonic(), h.path))
                h.close_connection = True
                return
            for attempt in range(2):
                conn = None
                try:
                    conn = self._checkout()
                    conn.request(h.command, h.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    with self._lock:
                        self._idle.append(conn)
                    break
                except (http.client.HTTPException, OSError):
                    self.upstream_errors += 1
                    if conn is not None:
                        conn.close()
        if resp is None:
            h.send_error(502)
            return
        try:
            h.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in latency_proxy.HOP_BY_HOP and k.lower() != "content-length":
                    h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(data)
            h.wfile.flush()
        except OSError:
            pass
        with self._lock:
            self.log.append(latency_proxy.Request(
                h.command, h.path, h.headers.get("Range"), resp.status,
                len(data) if h.command != "HEAD" else 0, start, time.monotonic()))


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ------------------------------------------------------------------------------------------
# Phases


class Bench:
    def __init__(self, args):
        self.args = args
        self.ext = str(Path(args.ext).resolve()) if args.ext else str(ext_path())
        if not Path(self.ext).exists():
            raise SystemExit(f"extension not found: {self.ext} (build it, or pass --ext)")
        self.env = child_env()
        (REPO_ROOT / "tests/.work").mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=REPO_ROOT / "tests/.work"))
        self.stderr_notes: dict = {}

    def params(self, role: str) -> str:
        extra = [p for p in (self.args.extra_params,
                             self.args.replica_params if role == "replica"
                             else self.args.primary_params) if p]
        return "".join("&" + p.lstrip("&") for p in extra)

    def reader_uri(self, url: str, name: str) -> str:
        return vfs_uri(url, name=name) + self.params("replica")

    def primary_uri(self, url: str, path: Path) -> str:
        return vfs_uri(url, name=str(path), role="primary") + self.params("primary")

    def s3_url(self, endpoint: str, bucket: str, prefix: str) -> str:
        return f"s3://{bucket}/{prefix}?endpoint={endpoint}&force-path-style=true"

    def note_stderr(self, phase: str, child: Child) -> list:
        lines = child.stderr_lines()
        uniq: dict = {}
        for x in lines:
            # Numbers vary (TXIDs, prefixes, times): group lines by their text without them.
            key = "".join("#" if ch.isdigit() else ch for ch in x)[:240]
            if key not in uniq:
                uniq[key] = [x[:400], 0]
            uniq[key][1] += 1
        notes = sorted(uniq.values(), key=lambda v: -v[1])
        if notes:
            self.stderr_notes[phase] = notes[:10]
            print(f"  {phase}: {len(lines)} stderr lines from the child, e.g.:", flush=True)
            for text, n in notes[:3]:
                print(f"    {n}x {text[:200]}", flush=True)
        return notes

    # -- set-up --

    def setup(self, max_n: int) -> dict:
        a = self.args
        self.s3 = S3Server(self.work / "moto").start()
        self.bucket = self.s3.new_bucket("scale")
        self.proxy = CountingProxy(self.s3.endpoint).start()
        self.wproxy = CountingProxy(self.s3.endpoint).start()
        (self.work / "readers").mkdir()
        self.seed_db = self.work / "seed" / "t0.db"
        self.seed_db.parent.mkdir()
        t = time.monotonic()
        # Through the writer's proxy, as the busy phase's writer will be: the primary's state
        # names its replica by the whole URL, endpoint included.
        url = self.s3_url(self.wproxy.endpoint, self.bucket, "t0")
        w = Child(WRITER, {"ext": self.ext, "uri": self.primary_uri(url, self.seed_db),
                           "interval": 1, "rows": SEED_ROWS},
                  self.work / "seed.log", self.work, self.env)
        w.expect("opened", 120)
        done = w.expect("done", 120)
        if w.wait() != 0:
            raise RuntimeError(f"seed writer failed:\n{w.stderr_tail()}")
        self.note_stderr("seed", w)
        seed_s = time.monotonic() - t
        keys = self.s3.list_keys(self.bucket, "t0/")
        blobs = {k: self.s3.get(self.bucket, k) for k, _ in keys}
        print(f"seed replica: {len(keys)} objects, {sum(map(len, blobs.values()))} bytes, "
              f"TXID {done['stats'].get('shipped_txid')}, {seed_s:.1f} s", flush=True)
        # A local copy for the native control.
        self.native_db = self.work / "native.db"
        shutil.copy(self.seed_db, self.native_db)
        if Path(f"{self.seed_db}-wal").exists():
            shutil.copy(f"{self.seed_db}-wal", f"{self.native_db}-wal")
        t = time.monotonic()
        jobs = [(f"t{i}/" + k[len("t0/"):], data) for i in range(1, max_n)
                for k, data in blobs.items()]
        with ThreadPoolExecutor(8) as ex:
            list(ex.map(lambda j: self.s3.put(self.bucket, j[0], j[1]), jobs))
        copy_s = time.monotonic() - t
        print(f"copied to {max_n - 1} more prefixes: {len(jobs)} PUTs in {copy_s:.1f} s",
              flush=True)
        return {"seed_objects": [k for k, _ in keys],
                "seed_bytes": sum(map(len, blobs.values())), "seed_s": seed_s,
                "copy_puts": len(jobs), "copy_s": copy_s, "seed_stats": done["stats"]}

    def start_monitor(self, verbose: bool) -> None:
        """Samples the rig every 5 s (requests served, moto's CPU, the parent's threads and
        descriptors, proxy errors) into self.rig; prints them with --verbose."""
        self.rig: list = []
        tick = os.sysconf("SC_CLK_TCK")

        def moto_cpu():
            try:
                f = open(f"/proc/{self.s3.proc.pid}/stat").read().rsplit(")", 1)[1].split()
                return (int(f[11]) + int(f[12])) / tick
            except (OSError, AttributeError, IndexError):
                return None

        def run():
            last = (time.monotonic(), len(self.proxy.log), moto_cpu())
            while not self._stop_monitor.wait(5):
                now = (time.monotonic(), len(self.proxy.log), moto_cpu())
                dt = now[0] - last[0]
                sample = {"t": now[0], "served_per_s": (now[1] - last[1]) / dt,
                          "moto_cpu": (now[2] - last[2]) / dt if None not in (now[2], last[2])
                          else None,
                          "threads": threading.active_count(),
                          "fds": len(os.listdir("/proc/self/fd")),
                          "client_errors": self.proxy.client_errors,
                          "abandoned": self.proxy.abandoned}
                self.rig.append(sample)
                if verbose:
                    print(f"    rig: {sample['served_per_s']:.0f} req/s served, moto CPU "
                          f"{100 * (sample['moto_cpu'] or 0):.0f} %, parent threads "
                          f"{sample['threads']}, fds {sample['fds']}, client errors "
                          f"{sample['client_errors']}, abandoned {sample['abandoned']}",
                          flush=True)
                last = now
        self._stop_monitor = threading.Event()
        threading.Thread(target=run, daemon=True).start()

    def check_moto(self) -> None:
        rc = self.s3.proc.poll() if self.s3.proc else "stopped"
        if rc is not None:
            raise RuntimeError(f"moto_server exited ({rc}); its log ends:\n"
                               f"{self.s3.log_path.read_text(errors='replace')[-3000:]}")

    # -- phases --

    def native(self, n: int) -> dict:
        uris = [f"file:{self.native_db}?mode=ro"] * n
        ch = Child(READERS, {"ext": self.ext, "uris": uris, "query": "SELECT count(*) FROM t",
                             "idle": 1, "poll_ms": 20, "open_deadline": 1e9},
                   self.work / f"native-{n}.log", self.work / "readers", self.env)
        op = ch.expect("opened", 300)
        if set(op["results"]) != {SEED_ROWS}:
            raise RuntimeError(f"native control: counts {set(op['results'])}, "
                               f"failures {op['failures'][:3]}")
        ch.expect("idle", 60)
        ch.send("exit")
        ch.expect("closed", 120)
        ch.wait()
        return {"open_s": op["t1"] - op["t0"], "s_loaded": op["s_loaded"],
                "s_opened": op["s_opened"]}

    def replicas(self, n: int) -> dict:
        a = self.args
        uris = [self.reader_uri(self.s3_url(self.proxy.endpoint, self.bucket, f"t{i}"),
                                f"t{i}.db") for i in range(n)]
        ch = Child(READERS, {"ext": self.ext, "uris": uris, "query": "SELECT count(*) FROM t",
                             "idle": a.idle_seconds, "poll_ms": a.poll_ms,
                             "open_deadline": a.open_deadline,
                             "progress": 100 if n >= 300 else 0},
                   self.work / f"replicas-{n}.log", self.work / "readers", self.env)
        try:
            return self._replicas(n, ch)
        finally:
            ch.kill()
            self.note_stderr(f"replicas N={n}", ch)

    def _replicas(self, n: int, ch: Child) -> dict:
        a = self.args
        op = ch.expect("opened", a.open_deadline + 120, on_other=_progress(f"replicas N={n}"))
        bad = [i for i, r in enumerate(op["results"])
               if r is not None and (r < SEED_ROWS if i == 0 else r != SEED_ROWS)]
        if bad:
            raise RuntimeError(f"replicas {bad[:10]} gave wrong counts: "
                               f"{[op['results'][i] for i in bad[:10]]}")
        fails = op["failures"]
        opened = op["attempted"] - len(fails)
        if fails:
            print(f"  replicas N={n}: {len(fails)} of {op['attempted']} failed to open/query, "
                  f"e.g. t{fails[0][0]} after {fails[0][1]:.1f} s: {fails[0][2][:300]}",
                  flush=True)
        if op["attempted"] < n:
            print(f"  replicas N={n}: only {op['attempted']} attempted within --open-deadline "
                  f"{a.open_deadline:g} s", flush=True)
        open_s = op["t1"] - op["t0"]
        print(f"  replicas N={n}: opened and queried in {open_s:.1f} s "
              f"(slowest {op['slowest'][0]*1000:.0f} ms, t{op['slowest'][1]}), "
              f"RSS {op['s_loaded']['rss_kb']/1024:.1f} -> {op['s_opened']['rss_kb']/1024:.1f} MiB, "
              f"threads {op['s_loaded']['threads']} -> {op['s_opened']['threads']}", flush=True)
        startup = window(self.proxy, op["t0"], op["t1"])
        idle = ch.expect("idle", a.idle_seconds + 120)
        time.sleep(0.2)  # the proxy logs a request when its answer is sent
        w_idle = window(self.proxy, idle["t0"], idle["t1"])
        print(f"  replicas N={n}: idle {a.idle_seconds:g} s: CPU "
              f"{100*idle['cpu']/(idle['t1']-idle['t0']):.2f} % of a core, requests {_kinds(w_idle)}",
              flush=True)
        out = {"n": n, "opened": opened, "attempted": op["attempted"],
               "open_s": open_s, "slowest_open": op["slowest"], "failures": fails,
               "s_start": op["s_start"], "s_loaded": op["s_loaded"], "s_opened": op["s_opened"],
               "s_idle": idle["s_idle"], "idle_cpu_s": idle["cpu"],
               "idle_wall_s": idle["t1"] - idle["t0"], "startup_requests": startup,
               "idle_requests": w_idle, "idle_per_replica_hour": per_hour(w_idle, opened)}
        if a.busy_seconds > 0 and op["results"][0] is not None:
            out["busy"] = self.busy(n, ch, opened)
        ch.send("exit")
        cl = ch.expect("closed", 300)
        out["close_s"] = cl["close_s"]
        out["stats_t0"] = cl["stats0"]
        out["returncode"] = ch.wait()
        return out

    def busy(self, n: int, ch: Child, opened: int) -> dict:
        a = self.args
        url = self.s3_url(self.wproxy.endpoint, self.bucket, "t0")
        w = Child(WRITER, {"ext": self.ext, "uri": self.primary_uri(url, self.seed_db),
                           "interval": a.commit_interval},
                  self.work / f"writer-{n}.log", self.work, self.env)
        try:
            wo = w.expect("opened", 120)
            ch.send(f"busy {a.busy_seconds}")
            b = ch.expect("busy", a.busy_seconds + 120)
            w.send("stop")
            wd = w.expect("done", 120)
            w.wait()
        finally:
            w.kill()
            self.note_stderr(f"writer N={n}", w)
        last = wd["last_id"]
        if last is not None:
            ch.send(f"await {last}")
        aw = ch.expect("awaited", 60) if last is not None else {"seen": [], "last_id": None}
        time.sleep(0.2)
        commits = {rid: ts for rid, ts in wd["commits"] if ts >= b["start_wall"]}
        lat = sorted(seen - ts for rid, ts, seen in aw["seen"] if rid in commits)
        w_t0 = window(self.proxy, b["t0"], b["t1"], only=lambda r: r == "t0")
        w_others = window(self.proxy, b["t0"], b["t1"], only=lambda r: r != "t0")
        w_writer = window(self.wproxy, b["t0"], b["t1"])
        res = {"commits": len(commits), "seen": len(lat),
               "missing": sorted(set(commits) - {r for r, _, _ in aw["seen"]})[:20],
               "latency_s": lat,
               "latency_p50": statistics.median(lat) if lat else None,
               "latency_max": max(lat) if lat else None,
               "writer_open_s": wo["open_s"], "writer_close_s": wd["close_s"],
               "writer_stats": wd["stats"], "cpu_s": b["cpu"], "wall_s": b["t1"] - b["t0"],
               "s_busy": b["s_busy"],
               "t0_requests": w_t0, "t0_per_hour": per_hour(w_t0, 1),
               "others_requests": w_others,
               "others_per_replica_hour": per_hour(w_others, opened - 1) if opened > 1 else None,
               "writer_requests": w_writer, "writer_per_hour": per_hour(w_writer, 1)}
        for name, w_ in (("t0", w_t0), ("writer", w_writer)):
            print(f"    {name}: " + ", ".join(f"{k} {v}" for k, v in
                                          list(w_["shapes"].items())[:6]), flush=True)
        print(f"  busy N={n}: {len(commits)} commits, {len(lat)} seen, latency p50 "
              f"{_ms(res['latency_p50'])} max {_ms(res['latency_max'])}; t0 {_kinds(w_t0)}; "
              f"others {_kinds(w_others)}; writer {_kinds(w_writer)}", flush=True)
        return res

    def primaries(self, n: int) -> dict:
        a = self.args
        bucket = self.s3.new_bucket(f"prim{n}")
        d = self.work / f"prim-{n}"
        d.mkdir()
        uris = [self.primary_uri(self.s3_url(self.proxy.endpoint, bucket, f"p{i}"),
                                 d / f"p{i}.db") for i in range(n)]
        ch = Child(PRIMARIES, {"ext": self.ext, "uris": uris, "idle": a.idle_seconds,
                               "settle": a.settle_seconds, "settle_max": 60,
                               "open_deadline": a.open_deadline,
                               "progress": 100 if n >= 300 else 0},
                   self.work / f"primaries-{n}.log", d, self.env)
        try:
            return self._primaries(n, ch, bucket)
        finally:
            ch.kill()
            self.note_stderr(f"primaries N={n}", ch)

    def _primaries(self, n: int, ch: Child, bucket: str) -> dict:
        a = self.args
        op = ch.expect("opened", a.open_deadline + 120, on_other=_progress(f"primaries N={n}"))
        fails = op["failures"]
        opened = op["opened"]
        if fails:
            print(f"  primaries N={n}: {len(fails)} of {op['attempted']} failed to open/write, "
                  f"e.g. p{fails[0][0]} after {fails[0][1]:.1f} s: {fails[0][2][:300]}",
                  flush=True)
        if op["attempted"] < n:
            print(f"  primaries N={n}: only {op['attempted']} attempted within --open-deadline "
                  f"{a.open_deadline:g} s", flush=True)
        open_s = op["t1"] - op["t0"]
        per = sorted(op["open_s"])
        print(f"  primaries N={n}: opened (open + CREATE + INSERT) in {open_s:.1f} s "
              f"(median {per[len(per)//2]*1000:.0f} ms, max {per[-1]*1000:.0f} ms), "
              f"RSS {op['s_loaded']['rss_kb']/1024:.1f} -> {op['s_opened']['rss_kb']/1024:.1f} MiB, "
              f"threads {op['s_loaded']['threads']} -> {op['s_opened']['threads']}", flush=True)
        st = ch.expect("settled", 300)
        time.sleep(0.2)
        w_start = window(self.proxy, op["t0"], st["t"])
        idle = ch.expect("idle", a.idle_seconds + 300)
        time.sleep(0.2)
        w_idle = window(self.proxy, idle["t0"], idle["t1"])
        print(f"  primaries N={n}: settled after {st['waited']:.1f} s "
              f"({st['summary']['pending']} pending, errors {st['summary']['errors'] or 'none'}); "
              f"start-up {_kinds(w_start)}; idle {a.idle_seconds:g} s: CPU "
              f"{100*idle['cpu']/(idle['t1']-idle['t0']):.2f} % of a core, {_kinds(w_idle)}",
              flush=True)
        cl = ch.expect("closed", 300 + n)
        rc = ch.wait()
        keys = self.s3.list_keys(bucket, "")
        print(f"  primaries N={n}: closed in {cl['close_s']:.1f} s; bucket holds {len(keys)} "
              f"objects", flush=True)
        return {"n": n, "opened": opened, "attempted": op["attempted"],
                "open_s": open_s, "open_each_s": per, "failures": fails,
                "s_start": op["s_start"],
                "s_loaded": op["s_loaded"], "s_opened": op["s_opened"],
                "s_settled": st["s_settled"], "s_idle": idle["s_idle"],
                "settle_s": st["waited"], "settle_summary": st["summary"],
                "idle_summary": idle["summary"], "idle_cpu_s": idle["cpu"],
                "idle_wall_s": idle["t1"] - idle["t0"], "startup_requests": w_start,
                "startup_per_db": {k: w_start[k] / max(opened, 1)
                                   for k in KINDS + ["total", "dollars"]},
                "idle_requests": w_idle, "idle_per_db_hour": per_hour(w_idle, opened),
                "close_s": cl["close_s"], "objects_after": len(keys), "returncode": rc}


def _progress(what: str):
    def show(ev):
        if ev["event"] == "progress":
            print(f"  {what}: {ev['opened']} opened in {ev['elapsed']:.1f} s"
                  + (f", {ev['failed']} failed" if ev.get("failed") else ""), flush=True)
    return show


# ------------------------------------------------------------------------------------------
# Report


def _ms(s):
    return "-" if s is None else f"{s*1000:.0f} ms"


def _kinds(w: dict) -> str:
    s = " ".join(f"{k.upper()} {w[k]:g}" if isinstance(w[k], int) else f"{k.upper()} {w[k]:.1f}"
                 for k in KINDS if w.get(k))
    if w.get("not_modified"):
        s += f" ({w['not_modified']} of the GETs answered 304)"
    if w.get("abandoned"):
        s += f" (and {w['abandoned']} the client gave up on before the proxy forwarded them)"
    return s or "none"


def _rate(h: dict) -> str:
    return " / ".join(f"{h[k]:.0f}" for k in ("list", "get", "put", "head")) + (
        f" (+{h['post'] + h['delete'] + h['other']:.0f})"
        if h["post"] + h["delete"] + h["other"] else "")


def _opened(x: dict) -> str:
    """Open time of a phase, and how many opened when not all did."""
    text = f"{x['open_s']:.1f} s"
    if x["opened"] < x["n"]:
        text += f", {x['opened']} of {x['n']} opened"
        if x["attempted"] < x["n"]:
            text += f" ({x['n'] - x['attempted']} not tried: --open-deadline)"
    return text


def _mib(kb):
    return f"{kb/1024:.1f}"


def _kib_per(delta_kb, n):
    return f"{delta_kb / n:.0f}"


def _usd(x):
    if not x:
        return "$0"
    if x >= 100:
        return f"${x:,.0f}"
    if x >= 1:
        return f"${x:.2f}"
    # two significant digits, never in e-notation
    return f"${x:.{max(2, 1 - math.floor(math.log10(x)))}f}"


def report(args, ext, setup, results) -> str:
    rev = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "src",
                            "Cargo.toml"], capture_output=True, text=True).stdout.strip()
    params = " ".join(f"--{k} '{v}'" for k, v in (("extra-params", args.extra_params),
                                                 ("replica-params", args.replica_params),
                                                 ("primary-params", args.primary_params)) if v)
    L = [
        "# Scale benchmark: many databases in one process",
        "",
        f"`tests/bench/bench_scale.py --counts {args.counts} --idle-seconds {args.idle_seconds:g}"
        + (f" {params}" if params else "") + f"` on {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{os.cpu_count()} cores, extension `{ext}` (git {rev}{' + uncommitted src changes' if dirty else ''}). "
        "moto S3 on 127.0.0.1 behind a counting proxy without delay; each phase a fresh "
        "/usr/bin/python3 process. Request prices: LIST/PUT/POST $0.005 per 1,000, GET/HEAD "
        "$0.0004 per 1,000. Request rates are LIST / GET / PUT / HEAD (+ POST, DELETE); GET "
        "includes conditional GETs answered 304 Not Modified (S3 bills them as GETs).",
        "",
        f"Set-up: one replica written by our primary ({len(setup['seed_objects'])} objects, "
        f"{setup['seed_bytes']:,} bytes, {SEED_ROWS} rows), copied to the other prefixes "
        f"({setup['copy_puts']} PUTs in {setup['copy_s']:.1f} s, not counted"
        + (f"; {setup['copy_puts'] / setup['copy_s']:.0f} PUT/s from 8 threads is about what "
           f"moto serves on this machine" if setup['copy_s'] > 1 else "") + ").",
    ]
    reps = [r for r in results if r.get("replicas")]
    if reps:
        L += ["", "## Read replicas, idle",
              "",
              f"N connections, each its own replica, one query each, then {args.idle_seconds:g} s "
              "idle (the window starts right after the opens, so it includes the "
              "`poll_interval_max` back-off ramp). RSS/db = (RSS after opening − RSS after "
              "loading) / replicas open; native = plain SQLite connections to a local copy of the same "
              "database.",
              "",
              "| N | open all | RSS MiB (loaded → opened → after idle) | RSS/db KiB | native RSS/db KiB "
              "| threads | fds (sockets) | idle CPU % core | idle req / replica-hour | $ / replica-hour "
              "| $ / 1,000 replicas / month |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in reps:
            x, nat = r["replicas"], r.get("native")
            h = x["idle_per_replica_hour"]
            d = x["s_opened"]["rss_kb"] - x["s_loaded"]["rss_kb"]
            nd = (_kib_per(nat["s_opened"]["rss_kb"] - nat["s_loaded"]["rss_kb"], x["n"])
                  if nat else "-")
            L.append(f"| {x['n']} | {_opened(x)} | {_mib(x['s_loaded']['rss_kb'])} → "
                     f"{_mib(x['s_opened']['rss_kb'])} → {_mib(x['s_idle']['rss_kb'])} "
                     f"| {_kib_per(d, max(x['opened'], 1))} | {nd} "
                     f"| {x['s_loaded']['threads']} → {x['s_opened']['threads']} → "
                     f"{x['s_idle']['threads']} "
                     f"| {x['s_opened']['fds']} ({x['s_opened']['sockets']}) "
                     f"| {100 * x['idle_cpu_s'] / x['idle_wall_s']:.2f} | {_rate(h)} "
                     f"| {_usd(h['dollars'])} | {_usd(h['dollars'] * 730 * 1000)} |")
        if len(reps) >= 2:
            a_, b_ = reps[-2]["replicas"], reps[-1]["replicas"]
            if b_["opened"] > a_["opened"]:
                m = ((b_["s_opened"]["rss_kb"] - a_["s_opened"]["rss_kb"])
                     / (b_["opened"] - a_["opened"]))
                L += ["", f"Marginal RSS per replica between {a_['opened']} and {b_['opened']} "
                          f"open replicas: {m:.0f} KiB."]
        L += ["", "Start-up requests (opening and the first query), per replica: " + "; ".join(
            f"N={r['replicas']['n']}: " + _rate({k: r['replicas']['startup_requests'][k] /
                                                 max(r['replicas']['attempted'], 1)
                                                 for k in KINDS})
            for r in reps) + "."]
        if args.idle_seconds < 65:
            L += ["", f"The idle window ({args.idle_seconds:g} s) is shorter than `list_interval` "
                      "(default 1 m) plus the ramp: the level-0 LIST a replica following a "
                      "manifest makes once a `list_interval` is (mostly) not in it, and LIST is "
                      "the dearest request. For the steady rate run with `--idle-seconds 150` "
                      "(after the ~30 s ramp each replica polls once per `poll_interval_max`, "
                      "30 s, and lists once per `list_interval`)."]
        L += ["", "Requests in the idle window by 5 s slice (the back-off ramp): " + "; ".join(
            f"N={r['replicas']['n']}: {r['replicas']['idle_requests']['per_5s']}"
            for r in reps) + "."]
        L += ["", "Busiest second of requests served (start-up / idle window): " + "; ".join(
            f"N={r['replicas']['n']}: {r['replicas']['startup_requests']['peak_per_s']} / "
            f"{r['replicas']['idle_requests']['peak_per_s']}" for r in reps) + "."]
        busy = [r for r in reps if r["replicas"].get("busy")]
        if busy:
            L += ["", "## Busy writer on one replica",
                  "",
                  f"A primary in another process commits a row every {args.commit_interval:g} s on "
                  f"average (uniform 0.5x-1.5x) "
                  f"to t0 (its requests through a second proxy); the reader process's t0 "
                  f"connection polls `SELECT ... WHERE id > ?` every {args.poll_ms} ms for "
                  f"{args.busy_seconds:g} s. The other N−1 replicas have been idle for "
                  f"{args.idle_seconds:g} s+ by then. Commit-to-visible: writer's `time.time()` "
                  "at INSERT to the reader's at the first SELECT that returns the row.",
                  "",
                  "| N | commits seen | latency p50 | latency max | t0 req / hour | others req / "
                  "replica-hour | others $ / replica-hour | writer req / hour | reader CPU % core |",
                  "|---|---|---|---|---|---|---|---|---|"]
            for r in busy:
                x = r["replicas"]
                b = x["busy"]
                o = b["others_per_replica_hour"]
                L.append(f"| {x['n']} | {b['seen']}/{b['commits']} | {_ms(b['latency_p50'])} "
                         f"| {_ms(b['latency_max'])} | {_rate(b['t0_per_hour'])} "
                         f"| {_rate(o) if o else '-'} | {_usd(o['dollars']) if o else '-'} "
                         f"| {_rate(b['writer_per_hour'])} "
                         f"| {100 * b['cpu_s'] / b['wall_s']:.2f} |")
    prims = [r for r in results if r.get("primaries")]
    if prims:
        L += ["", "## Primaries, idle",
              "",
              f"N primaries in one process (each its own file and replica prefix), each "
              f"creating a table and committing one row; then at least {args.settle_seconds:g} s "
              f"and until all shipped (start-up), then {args.idle_seconds:g} s idle.",
              "",
              "| N | open all (median, max one) | settle | RSS MiB (loaded → opened → after idle) "
              "| RSS/db KiB | threads | fds (sockets) | start-up req / db | idle CPU % core "
              "| idle req / db-hour | $ / db-hour | $ / 1,000 dbs / month | close all |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in prims:
            x = r["primaries"]
            h = x["idle_per_db_hour"]
            per = x["open_each_s"]
            d = x["s_opened"]["rss_kb"] - x["s_loaded"]["rss_kb"]
            L.append(f"| {x['n']} | {_opened(x)} ({per[len(per)//2]*1000:.0f} ms, "
                     f"{per[-1]*1000:.0f} ms) | {x['settle_s']:.1f} s "
                     f"| {_mib(x['s_loaded']['rss_kb'])} → {_mib(x['s_opened']['rss_kb'])} → "
                     f"{_mib(x['s_idle']['rss_kb'])} | {_kib_per(d, max(x['opened'], 1))} "
                     f"| {x['s_loaded']['threads']} → {x['s_opened']['threads']} → "
                     f"{x['s_idle']['threads']} "
                     f"| {x['s_opened']['fds']} ({x['s_opened']['sockets']}) "
                     f"| {_rate(x['startup_per_db'])} "
                     f"| {100 * x['idle_cpu_s'] / x['idle_wall_s']:.2f} | {_rate(h)} "
                     f"| {_usd(h['dollars'])} | {_usd(h['dollars'] * 730 * 1000)} "
                     f"| {x['close_s']:.1f} s |")
        L += ["", "Requests in the idle window by 5 s slice (a burst ~30 s after the commit is "
                  "the first level-1 compaction, once; a primary with nothing new makes none "
                  "after it, so the per-hour rate above is an upper bound): " + "; ".join(
                      f"N={r['primaries']['n']}: {r['primaries']['idle_requests']['per_5s']}"
                      for r in prims) + "."]
        problems = [(r["primaries"]["n"], r["primaries"]["idle_summary"]) for r in prims
                    if r["primaries"]["idle_summary"]["errors"]
                    or r["primaries"]["idle_summary"]["stopped"]
                    or r["primaries"]["idle_summary"]["pending"]]
        for n, s in problems:
            L.append(f"\nN={n}: after idle {s['pending']} pending, errors {s['errors']}, "
                     f"stopped {s['stopped']}.")
    big = results[-1] if results else {}
    shapes = []
    if big.get("replicas"):
        x = big["replicas"]
        shapes.append(("replicas, idle", x["idle_requests"]))
        if x.get("busy"):
            shapes += [("busy: t0 reader", x["busy"]["t0_requests"]),
                       ("busy: other readers", x["busy"]["others_requests"]),
                       ("busy: writer", x["busy"]["writer_requests"])]
    if big.get("primaries"):
        x = big["primaries"]
        shapes += [("primaries, start-up", x["startup_requests"]),
                   ("primaries, idle", x["idle_requests"])]
    if shapes:
        L += ["", f"## What the requests were (N={big['n']})", "",
              "Keys with the replica as `{r}` and numbers as `#`; count in the window.", ""]
        for name, w in shapes:
            top = list(w["shapes"].items())[:8]
            L.append(f"- {name} ({w['seconds']:.0f} s): " + (", ".join(
                f"`{k}` {v}" for k, v in top) if top else "none"))
    odd = []
    for r in results:
        for phase in ("replicas", "primaries"):
            x = r.get(phase)
            if x and x.get("failures"):
                f = x["failures"]
                odd.append(f"{phase} N={x['n']}: {len(f)} of {x['attempted']} failed to open, the "
                           f"first ({'t' if phase == 'replicas' else 'p'}{f[0][0]}, after "
                           f"{f[0][1]:.1f} s): `{f[0][2][:300]}`")
    for r in results:
        for phase in ("replicas", "primaries"):
            x = r.get(phase)
            if not x:
                continue
            for wname in ("startup_requests", "idle_requests"):
                st = x[wname]["statuses"]
                if st:
                    odd.append(f"{phase} N={x['n']} {wname.split('_')[0]}: non-2xx {st}")
    if odd:
        L += ["", "## Failures and answers other than 2xx", ""] + [f"- {o}" for o in odd]
    return "\n".join(L) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default="10,100,1000")
    ap.add_argument("--idle-seconds", type=float, default=30)
    ap.add_argument("--busy-seconds", type=float, default=15, help="0: no busy phase")
    ap.add_argument("--commit-interval", type=float, default=1.0)
    ap.add_argument("--poll-ms", type=int, default=20)
    ap.add_argument("--settle-seconds", type=float, default=5)
    ap.add_argument("--open-deadline", type=float, default=150,
                    help="seconds; a phase stops opening more databases after this and goes "
                         "on with those it has (reported)")
    ap.add_argument("--phases", default="native,replicas,primaries",
                    help="comma-separated subset of native,replicas,primaries")
    ap.add_argument("--extra-params", default="", help="appended to every litestream URI")
    ap.add_argument("--replica-params", default="", help="appended to the readers' URIs")
    ap.add_argument("--primary-params", default="", help="appended to primaries' URIs")
    ap.add_argument("--ext", default="", help="liblitestream.so (default: $LITESTREAM_EXT or "
                                              "target/release)")
    ap.add_argument("--out", default="/tmp/bench_scale.md")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--verbose", action="store_true",
                    help="print the rig's state (requests served, moto's CPU, ...) every 5 s")
    ap.add_argument("--no-readme", action="store_true",
                    help="accepted; README.md is never updated by this bench")
    args = ap.parse_args()
    counts = sorted({int(x) for x in args.counts.split(",") if x.strip()})
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    raise_nofile()

    b = Bench(args)
    print(f"extension {b.ext}; work folder {b.work}", flush=True)
    results, t_all, failed = [], time.monotonic(), None
    try:
        setup = b.setup(max(counts))
        b.start_monitor(args.verbose)
        for n in counts:
            r = {"n": n}
            results.append(r)
            t = time.monotonic()
            if "native" in phases:
                r["native"] = b.native(n)
            if "replicas" in phases:
                r["replicas"] = b.replicas(n)
                b.check_moto()
            if "primaries" in phases:
                r["primaries"] = b.primaries(n)
            print(f"N={n} done in {time.monotonic() - t:.0f} s", flush=True)
            b.check_moto()
    except Exception as e:  # report what was measured, then the error
        import traceback
        if "setup" not in locals():
            raise
        failed = traceback.format_exc()
        print(failed, flush=True)
    finally:
        for p in (getattr(b, "proxy", None), getattr(b, "wproxy", None)):
            if p:
                p.stop()
        if getattr(b, "s3", None):
            b.s3.stop()
    total = time.monotonic() - t_all
    proxy_errors = {name: {"client_errors": p.client_errors, "upstream_errors": p.upstream_errors,
                           "client_error_kinds": p.client_error_kinds,
                           "abandoned": p.abandoned}
                    for name, p in (("readers", b.proxy), ("writer", b.wproxy))}
    text = report(args, b.ext, setup, [r for r in results if len(r) > 1])
    if failed:
        text += f"\n**The run stopped early:**\n\n```\n{failed[-3000:]}```\n"
    if any(v["upstream_errors"] or v["abandoned"] for v in proxy_errors.values()):
        text += (f"\nProxy trouble (upstream_errors: moto not reached, retried once, then 502; "
                 f"abandoned: the client had given up before its turn came, not forwarded): "
                 f"{proxy_errors}.\n")
    if b.stderr_notes:
        text += "\nExtension stderr (grouped, most frequent first):\n\n" + "\n".join(
            f"- {phase}: " + "; ".join(f"{n}x `{t[:200]}`" for t, n in notes[:3])
            for phase, notes in b.stderr_notes.items()) + "\n"
    text += f"\nTotal run time {total:.0f} s.\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(
        {"args": vars(args), "ext": b.ext, "setup": setup, "results": results,
         "proxy_errors": proxy_errors, "error": failed, "rig": getattr(b, "rig", []),
         "stderr": b.stderr_notes, "total_s": total}, indent=1, default=str))
    print()
    print(text)
    print(f"wrote {out} and {out.with_suffix('.json')}")
    if failed:
        print(f"the run stopped early; logs kept in {b.work}")
        sys.exit(1)
    if not args.keep:
        shutil.rmtree(b.work, ignore_errors=True)


if __name__ == "__main__":
    main()
