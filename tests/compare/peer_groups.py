#!/usr/bin/env python3
"""The groups of Litestream's own VFS test suite, run against both extensions in one run.

Each group is a scenario of the peer's suite (`cmd/litestream-vfs/*_test.go`, `vfs_test.go`)
on a replica written by the real `litestream replicate`. The reader is a fresh child process
(`tests/py/sqlite_child.py`) that loads one extension, ours or the Go extension 0.5.17, and
opens `file:replica.db?vfs=litestream` with the replica named by `LITESTREAM_REPLICA_URL` and
everything else at its default (both poll every second); this process drives the writer,
Litestream and the faulty store around it on its own clock. A group passes when the reader
never returns a wrong row, never an error SQLite did not have to return, and does what the
peer's test asks. `tests/py/test_peer_scenarios.py` holds the same scenarios as tests of
ours alone, with tighter settings.

Run: /usr/bin/python3 tests/compare/peer_groups.py [--only NAME ...] [--out report.md]
(set up by `bash tests/setup.sh`; takes about five minutes).
"""
import argparse
import json
import random
import sqlite3
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "py"))
from harness.common import wait_until  # noqa: E402
from harness.data import (Appender, create_source_db, db_image, image_digest,  # noqa: E402
                          insert_orders)
from harness.litestream import FAST_COMPACTION, Litestream, restore  # noqa: E402
from harness.ltx import list_ltx  # noqa: E402
from harness.s3 import S3Server  # noqa: E402
from harness.sqlite_hosts import ext_path, go_vfs_path, run_sqlite_child  # noqa: E402
from fault_proxy import FaultProxy  # noqa: E402

EXTS = {"ours": ext_path, "go": go_vfs_path}
URI = "file:replica.db?vfs=litestream"
COUNT = "SELECT count(*) FROM orders"
CONSISTENT = "SELECT count(*), coalesce(max(id), 0) FROM orders"


def q(sql, **kw):
    return {"op": "query", "conn": "db", "sql": sql, **kw}


def sleep(s):
    return {"op": "sleep", "seconds": s}


def polled(seconds, every=0.25, sql=COUNT):
    """Steps that run `sql` every `every` seconds for `seconds`, errors recorded."""
    return [s for _ in range(int(seconds / every))
            for s in (sleep(every), q(sql, continue_on_error=True))]


class Reader(threading.Thread):
    """A child process running `steps` on the replica through extension `ext`."""

    def __init__(self, ext, url, steps, env=None, timeout=300):
        super().__init__(daemon=True)
        e = {"LITESTREAM_REPLICA_URL": url, "LITESTREAM_LOG_LEVEL": "error"}
        e.update(env or {})
        self.steps = [{"op": "load", "path": str(EXTS[ext]())},
                      {"op": "open", "name": "db", "uri": URI, "continue_on_error": True}] + steps
        self.env, self.timeout = e, timeout
        self.result = None

    def run(self):
        try:
            self.result = run_sqlite_child(self.steps, env=self.env,
                                           timeout=self.timeout)
        except Exception as e:  # noqa: BLE001 - a hang is a result too
            self.result = e

    def run_now(self):
        self.start()
        return self.finish()

    def finish(self, open_error_ok=False):
        """Waits; returns (results, times) of the steps after open, or raises Failed. With
        `open_error_ok`, a failed open returns ([{"error": ...}], []) instead."""
        self.join()
        r = self.result
        if isinstance(r, Exception):
            raise Failed(f"the reader hung: {type(r).__name__}")
        if r.crashed:
            raise Failed(f"the reader process died (status {r.returncode}): "
                         f"{r.stderr.strip().splitlines()[-1:] or ''}")
        if r.error:
            step = self.steps[r.error["step"]]
            what = step.get("sql", step["op"])
            raise Failed(f"{what}: {r.error['type']} {r.error['message']}".strip())
        opened = r.results[1]
        if isinstance(opened, dict) and "error" in opened:
            if open_error_ok:
                return [opened], []
            raise Failed(f"open: {opened['error']['message']}")
        return r.results[2:], r.times[2:]


class Failed(Exception):
    pass


def errors(results):
    return [r["error"]["message"] or r["error"]["type"] for r in results
            if isinstance(r, dict) and "error" in r]


def values(results):
    return [r[0][0] for r in results if isinstance(r, list) and r]


class World:
    """A source database replicated by the real Litestream, and what a group needs."""

    def __init__(self, root: Path, s3: S3Server, name: str):
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
        self.s3 = s3
        self.src = self.dir / "src.db"
        self.bucket = s3.new_bucket(name[:20].replace("_", "-"))
        self.url = s3.replica_url(self.bucket, "db")
        self.stack = []

    def source(self, rows=200):
        self.w = create_source_db(self.src, rows=rows, overflow_rows=0)
        return self.w

    def replicated(self, rows=200, url=None, **kw):
        """The source database with `rows` orders, replicated and synced: its Litestream."""
        self.source(rows)
        ls = self.litestream(url, **kw)
        ls.wait_synced()
        return ls

    def litestream(self, url=None, **kw):
        ls = Litestream(self.src, url or self.url, workdir=self.dir, **kw).start()
        self.stack.append(ls)
        return ls

    def proxy(self, **kw):
        p = FaultProxy(self.s3.endpoint, **kw).__enter__()
        self.stack.append(p)
        return p

    def via(self, proxy):
        return f"s3://{self.bucket}/db?endpoint={proxy.endpoint}&force-path-style=true"

    def close(self):
        for x in reversed(self.stack):
            x.stop()


# ---------------------------------------------------------------------------------------------
# The groups. Each takes (world, ext) and returns a note, or raises Failed.


def read_and_follow(w, ext):
    """TestVFS_Simple, TestVFS_Updating: reads, then follows new commits."""
    ls = w.replicated()
    r = Reader(ext, w.url, [q(COUNT)] + polled(6))
    r.start()
    time.sleep(2)
    insert_orders(w.w, 201, 50)
    ls.wait_synced()
    res, _ = r.finish()
    seen = values(res)
    if errors(res) or set(seen) - {200, 250} or seen[-1] != 250:
        raise Failed(f"counts {sorted(set(seen))}, errors {errors(res)[:1]}")
    return "followed"


def active_read_transaction(w, ext):
    """TestVFS_ActiveReadTransaction: a read transaction keeps its state while new files
    land; the next one sees them."""
    ls = w.replicated()
    r = Reader(ext, w.url, [q("BEGIN"), q(COUNT), sleep(5), q(COUNT), q("COMMIT"), sleep(2.5),
                            q(COUNT)])
    r.start()
    time.sleep(1.5)
    insert_orders(w.w, 201, 50)
    ls.wait_synced()
    res, _ = r.finish()
    got = values(res)
    if got != [200, 200, 250]:
        raise Failed(f"counts {got}")
    return "isolated, then newer"


def outage(held, fault):
    def group(w, ext):
        ls = w.replicated()
        proxy = w.proxy()
        r = Reader(ext, w.via(proxy), [q(COUNT)] + polled(held + 12))
        r.start()
        time.sleep(2)
        if fault == "stall":
            proxy.add("stall", seconds=120)
        else:
            proxy.add("status")
        insert_orders(w.w, 201, 50)
        time.sleep(held)
        proxy.heal()
        healed = time.time()
        ls.wait_synced()
        res, times = r.finish()
        errs = errors(res)
        caught = [t for v, t in zip(res, times) if isinstance(v, list) and v[0][0] == 250]
        if errs:
            raise Failed(f"{len(errs)} queries failed: {errs[0][:80]}")
        if not caught:
            raise Failed("never followed again")
        lag = caught[0] - healed
        if lag > 2 * 1.0 + 1.5:
            raise Failed(f"followed again only {lag:.1f} s after the store answered")
        return f"following again {max(lag, 0):.1f} s after the store answered"
    return group


def long_transactions_under_retention(w, ext):
    """TestVFS_LongRunningTxnStress with fast compaction: four readers hold transactions of
    1.5 s while Litestream compacts every 2 s and deletes L0 files 2 s later; the store
    answers 503, resets and truncates now and then."""
    ls = w.replicated(500, config=FAST_COMPACTION)
    proxy = w.proxy(seed=11)
    proxy.add("status", rate=0.05)
    proxy.add("reset", rate=0.02)
    proxy.add("truncate", rate=0.02, method="GET")
    txn = [q("BEGIN", continue_on_error=True), q(CONSISTENT, continue_on_error=True),
           sleep(1.5), q(CONSISTENT, continue_on_error=True), q("COMMIT", continue_on_error=True)]
    readers = [Reader(ext, w.via(proxy), txn * 8) for _ in range(4)]
    appender = Appender(w.src, 501, pause=0.05)
    appender.start()
    for r in readers:
        r.start()
    try:
        results = [r.finish()[0] for r in readers]
    finally:
        appender.stop.set()
        appender.join()
    bad = []
    for res in results:
        bad += errors(res)
        pairs = [r for r in res if isinstance(r, list) and r]
        for a, b in zip(pairs[0::2], pairs[1::2]):
            if a != b or a[0][0] != a[0][1]:
                bad.append(f"inconsistent transaction {a} / {b}")
    if bad:
        raise Failed(f"{len(bad)} failures: {bad[0][:100]}")
    return f"{sum(len(r) for r in results) // 5} transactions, no error"


def ltx_timestamp(data: bytes) -> int:
    """The Timestamp field of an LTX header: ms since the epoch (big-endian i64 at 32)."""
    return struct.unpack(">q", data[32:40])[0]


def rfc3339_ms(ms: int) -> str:
    t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
    return f"{t}.{ms % 1000:03d}Z"


def time_travel_exact(w, ext):
    """TestVFS_TimeTravel: at each file's own timestamp and a millisecond after, the state
    `litestream restore -timestamp` restores."""
    url = (w.dir / "replica").as_uri()
    ls = w.replicated(10, url=url)
    for k in range(4):
        insert_orders(w.w, 11 + 10 * k, 10)
        ls.wait_synced()
        time.sleep(0.3)
    ls.stop()
    l0 = sorted((w.dir / "replica" / "ltx" / "0").glob("*.ltx"))[1:-1]
    stamps = [ltx_timestamp(f.read_bytes()) for f in l0]
    instants = [rfc3339_ms(ms + d) for ms in stamps for d in (0, 1)]
    want = []
    for i, at in enumerate(instants):
        out = w.dir / f"restored-{i}.db"
        restore(url, out, timestamp=at)
        want.append(sqlite3.connect(out).execute(COUNT).fetchone()[0])
    steps = [s for at in instants
             for s in (q(f"PRAGMA litestream_time = '{at}'", continue_on_error=True),
                       q(COUNT, continue_on_error=True))]
    res, _ = Reader(ext, url, steps).run_now()
    got = [v[0][0] if isinstance(v, list) else "error" for v in res[1::2]]
    refused = errors(res[0::2])
    if refused:
        raise Failed(f"setting the instant fails ({refused[0]}) at {len(refused)} of "
                     f"{len(instants)} instants" + (", though the rows then agree"
                                                    if got == want else ""))
    if got != want:
        wrong = [(at, g, x) for at, g, x in zip(instants, got, want) if g != x]
        raise Failed(f"{len(wrong)} of {len(want)} instants differ from litestream restore, "
                     f"e.g. {wrong[0][0]}: {wrong[0][1]} rows where it restores {wrong[0][2]}")
    return f"{len(want)} instants agree"


def write_enabled_pragma(w, ext):
    """TestVFS_WriteEnabled (on a read replica): reads 0; other values refused."""
    w.replicated(10)
    res, _ = Reader(ext, w.url, [q("PRAGMA litestream_write_enabled", continue_on_error=True),
                                 q("PRAGMA litestream_write_enabled = 'bogus'",
                                   continue_on_error=True)]).run_now()
    if res[0] != [["0"]] and res[0] != [[0]]:
        raise Failed(f"reads {res[0]}")
    if not errors(res[1:]):
        raise Failed("'bogus' accepted")
    return "0 on a replica, 'bogus' refused"


def hydration_short_sessions(w, ext):
    """hydration_e2e_test: two short sessions with LITESTREAM_HYDRATION_ENABLED/_PATH leave
    the complete database at the path."""
    w.replicated(3000)
    copy = w.dir / "hydrated.db"
    env = {"LITESTREAM_HYDRATION_ENABLED": "true", "LITESTREAM_HYDRATION_PATH": str(copy)}
    for _ in range(2):
        res, _ = Reader(ext, w.url, [q(COUNT)], env=env).run_now()
        if values(res) != [3000]:
            raise Failed(f"count {res}")
    if not copy.exists():
        left = sorted(p.name for p in w.dir.glob("hydrated.db*"))
        raise Failed(f"no complete copy at the path (left: {left})")
    if image_digest(copy.read_bytes()) != image_digest(db_image(w.src)):
        raise Failed("the copy differs from the database")
    return "complete copy, byte for byte"


def waits_for_first_snapshot(w, ext):
    """TestVFS_WaitsForInitialSnapshot: an open before the primary's first file waits."""
    r = Reader(ext, w.url, [q(COUNT)])
    r.start()
    time.sleep(0.5)
    w.source(rows=10)
    w.litestream()
    res, _ = r.finish()
    if values(res) != [10]:
        raise Failed(f"{res}")
    return "waited, then read"


def empty_first_listing(w, ext):
    """TestVFS_S3EventualConsistency: the first listings come back empty."""
    w.replicated(100)
    proxy = w.proxy()
    proxy.add("empty", method="LIST", count=3)
    res, _ = Reader(ext, w.via(proxy), [q(COUNT)]).run_now()
    if values(res) != [100]:
        raise Failed(f"{res}")
    return "kept listing"


def run_while_appending(w, reader, first_id, pause):
    """Runs `reader` to its end while orders from `first_id` are committed every `pause` s."""
    appender = Appender(w.src, first_id, pause=pause)
    appender.start()
    try:
        return reader.run_now()[0]
    finally:
        appender.stop.set()
        appender.join()


def descriptor_budget(w, ext):
    """TestVFS_FileDescriptorBudget: 8 connections reading while the writer commits and
    Litestream compacts; descriptors stay under 64 more than before, and go back on close."""
    url = (w.dir / "replica").as_uri()
    ls = w.replicated(200, url=url, config=FAST_COMPACTION)
    names = [f"c{i}" for i in range(8)]
    steps = [{"op": "fds"}]
    steps += [{"op": "open", "name": n, "uri": URI} for n in names]
    for _ in range(30):
        steps += [{"op": "query", "conn": n, "sql": CONSISTENT} for n in names]
        steps += [{"op": "fds"}, sleep(0.1)]
    steps += [{"op": "close", "conn": n} for n in names] + [sleep(1), {"op": "fds"}]
    res = run_while_appending(w, Reader(ext, url, steps), 201, 0.05)
    fds = [v for v in res if isinstance(v, int)]
    before, peak, after = fds[0], max(fds), fds[-1]
    if peak - before > 64 or after - before > 8:
        raise Failed(f"{before} before, peak {peak}, {after} after closing")
    return f"+{peak - before} at most, +{after - before} after closing"


def cache_spill_miss_storm(w, ext):
    """TestVFS_CacheMissStorm: SQLite's cache at 64 KiB with spilling, while commits land."""
    url = (w.dir / "replica").as_uri()
    w.replicated(3000, url=url)
    steps = [q("PRAGMA cache_size = -64"), q("PRAGMA cache_spill = ON")]
    steps += [q(CONSISTENT, continue_on_error=True) for _ in range(100)]
    res = run_while_appending(w, Reader(ext, url, steps), 3001, 0.02)
    rows = [r[0] for r in res[2:] if isinstance(r, list)]
    if errors(res) or any(n != top for n, top in rows):
        odd = [r for r in rows if r[0] != r[1]][:2]
        raise Failed(f"errors {errors(res)[:1]}, inconsistent {odd}")
    return "100 queries consistent"


def lock_page(w, ext):
    """TestVFSFile_ReadAtLockPageBoundary at 4096 and 65536 bytes a page: rows whose pages run
    across SQLite's lock page (byte 2^30) read back exactly."""
    notes = []
    for ps in (4096, 65536):
        src = w.dir / f"big{ps}.db"
        c = sqlite3.connect(src, isolation_level=None)
        c.execute(f"PRAGMA page_size={ps}")
        c.execute("PRAGMA journal_mode=OFF")
        c.execute("CREATE TABLE blobs(id INTEGER PRIMARY KEY, b BLOB)")
        c.execute("BEGIN")
        c.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1030) "
                  "INSERT INTO blobs SELECT i, CASE WHEN i BETWEEN 1010 AND 1030 "
                  "THEN randomblob(1048576) ELSE zeroblob(1048576) END FROM n")
        c.execute("COMMIT")
        c.execute("PRAGMA journal_mode=WAL")
        near = "SELECT id, length(b), hex(substr(b, 1000000, 16)) FROM blobs WHERE id >= 1005"
        want = c.execute(near).fetchall()
        c.close()
        url = (w.dir / f"replica{ps}").as_uri()
        ls = Litestream(src, url, workdir=w.dir).start()
        w.stack.append(ls)
        wait_until(lambda: list_ltx(url), 180, 0.2)
        ls.stop()
        res, _ = Reader(ext, url, [q(near)]).run_now()
        got = [tuple(r) for r in res[0]]
        for f in w.dir.glob(f"big{ps}.db*"):
            f.unlink()
        if got != want:
            raise Failed(f"page size {ps}: rows around the lock page differ")
        notes.append(str(ps))
    return "exact at " + ", ".join(notes)


def truncated_file(w, ext):
    """The newest L0 file cut in half (the issue's "panics on truncated files"; the peer's
    TestVFS_PartialLTXUpload injects one short read, which our store retries). A clear error
    or the rows of a complete state; never a crash or a wrong row."""
    url = (w.dir / "replica").as_uri()
    ls = w.replicated(100, url=url)
    insert_orders(w.w, 101, 20)
    ls.wait_synced()
    ls.stop()
    newest = max((w.dir / "replica" / "ltx" / "0").glob("*.ltx"))
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    r = Reader(ext, url, [q(COUNT, continue_on_error=True)])
    r.start()
    res, _ = r.finish(open_error_ok=True)
    if values(res) and values(res) not in ([100], [120]):
        raise Failed(f"wrong rows: {res}")
    if errors(res):
        return "error: " + errors(res)[0].split("litestream: ", 1)[-1][:60]
    return f"{values(res)[0]} rows"


GROUPS = [
    ("read and follow", read_and_follow),
    ("read transaction isolation while files land", active_read_transaction),
    ("1 s black hole of every request", outage(1.0, "stall")),
    ("7 s of 503 answers", outage(7.0, "status")),
    ("long transactions, 2 s L0 retention, faults", long_transactions_under_retention),
    ("time travel at exact file timestamps", time_travel_exact),
    ("PRAGMA litestream_write_enabled on a replica", write_enabled_pragma),
    ("hydration over two short sessions (env)", hydration_short_sessions),
    ("open before the first snapshot", waits_for_first_snapshot),
    ("empty first listings", empty_first_listing),
    ("descriptor budget, none leaked", descriptor_budget),
    ("SQLite cache spill under cache misses", cache_spill_miss_storm),
    ("lock page", lock_page),
    ("truncated LTX file", truncated_file),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="substrings of group names")
    ap.add_argument("--out", help="also write the Markdown table here")
    args = ap.parse_args()
    random.seed(1)
    root = Path(tempfile.mkdtemp(prefix="peer-groups-"))
    s3 = S3Server(root / "moto").start()
    rows = []
    try:
        for name, group in GROUPS:
            if args.only and not any(o in name for o in args.only):
                continue
            cells = []
            for ext in ("ours", "go"):
                world = World(root, s3, group.__name__)
                t0 = time.monotonic()
                try:
                    cells.append(f"pass: {group(world, ext)}")
                except Failed as e:
                    cells.append(f"FAIL: {e}")
                except Exception as e:  # noqa: BLE001 - a harness error is a result too
                    cells.append(f"FAIL ({type(e).__name__}): {str(e)[:100]}")
                finally:
                    world.close()
                print(f"{name} [{ext}] {time.monotonic() - t0:.1f}s: {cells[-1]}", flush=True)
            rows.append((name, *cells))
    finally:
        s3.stop()
    table = ["| group (peer test) | ours | Go extension 0.5.17 |", "|---|---|---|"]
    table += [f"| {n} | {a} | {b} |".replace("\n", " ") for n, a, b in rows]
    passed = [sum(r[i].startswith("pass") for r in rows) for i in (1, 2)]
    table.append(f"| **groups passed** | **{passed[0]} of {len(rows)}** | "
                 f"**{passed[1]} of {len(rows)}** |")
    print("\n".join(table))
    if args.out:
        Path(args.out).write_text("\n".join(table) + "\n")
    print(json.dumps({"ours": passed[0], "go": passed[1], "groups": len(rows)}))


if __name__ == "__main__":
    main()
