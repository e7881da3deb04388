"""SQLite hosting an extension: loading it into this process (connect), vfs_uri, and SQLite in a
separate process (run_sqlite_child, run_ext_child, the Go VFS via go_vfs)."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import sqlite3
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Iterable, Optional

from harness.common import (REPO_ROOT, HarnessError, _must_exist, child_env, tail, venv_dir,
                            wait_until)

HERE = Path(__file__).resolve().parents[1]
CHILD_SCRIPT = HERE / "sqlite_child.py"


# --------------------------------------------------------------------------------------------
# Locations


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


def one_row_replica(url: str, db_path: os.PathLike | str) -> None:
    """A replica at `url` written by our primary (sync=remote) from `db_path`: table t
    holding one row, the writer closed."""
    w = connect(vfs_uri(url, name=str(db_path), role="primary", sync="remote"))
    w.execute("CREATE TABLE t(x)")
    w.execute("INSERT INTO t VALUES (1)")
    w.close()


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


def litestream_stats(conn: sqlite3.Connection) -> dict:
    """`PRAGMA litestream_stats` of a connection (a replica's or a primary's), parsed."""
    return json.loads(conn.execute("PRAGMA litestream_stats").fetchone()[0])


def wait_shipped(conn: sqlite3.Connection, timeout: float = 60) -> dict:
    """On a primary connection: waits until nothing committed is waiting to ship, checks
    that shipping has no error and did not stop, and returns the stats then."""
    wait_until(lambda: not litestream_stats(conn)["pending"], timeout)
    s = litestream_stats(conn)
    assert s["last_error"] is None and s["stopped"] is None, s
    return s


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
