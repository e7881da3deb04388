"""The change feed (issue 15): our primary keeps `manifest.json` beside the levels, readers poll
it with a conditional GET instead of listing, and fall back to listing when it is missing,
unusable or behind; a replica can then be served by a plain static web server; the polls of
every replica in a process share one request-rate bound; an idle primary makes no request."""

import json
import shutil
import sqlite3
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

from harness.common import child_env, wait_until
from harness.data import all_tables_digest
from harness.litestream import restore
from harness.sqlite_hosts import (child_python, connect, ext_path as built_ext, litestream_stats,
                                  one_row_replica, vfs_uri, wait_shipped)
from latency_proxy import LatencyProxy
from range_server import RangeServer

FAST = dict(levels="1s,2s", snapshot_interval="3s", snapshot_retention="4s", l0_retention="1s")


def txid(conn) -> int:
    return int(conn.execute("SELECT litestream_txid()").fetchone()[0], 16)


def feed(conn) -> dict:
    return litestream_stats(conn)["poll"]["feed"]


def manifest_of(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def test_reader_follows_the_manifest_through_compaction_and_retention(s3_server, tmp_path):
    """A reader of an S3 replica written by our primary, with compaction and retention every
    second or two: each state it shows is one the writer committed (rows 1..k at the TXID
    the writer saw for row k), in order, up to the head, while its polls are conditional
    GETs and it lists nothing after opening."""
    bucket = s3_server.new_bucket("feed")
    with LatencyProxy(s3_server.endpoint, delay=0) as proxy:
        url = f"s3://{bucket}/db?endpoint={proxy.endpoint}&force-path-style=true"
        w = connect(vfs_uri(url, name=str(tmp_path / "app.db"), role="primary", sync="remote",
                            **FAST))
        w.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        w.execute("INSERT INTO t(v) VALUES (randomblob(300))")
        at_txid = {txid(w): 1}
        r = connect(vfs_uri(url, name=str(tmp_path / "r.db"), poll_interval="100ms"))
        seen = []
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                row = r.execute("SELECT litestream_txid(), count(*), max(id) FROM t").fetchone()
                seen.append((int(row[0], 16), row[1], row[2]))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            deadline = time.time() + 7
            n = 1
            while time.time() < deadline:
                n += 1
                w.execute("INSERT INTO t(v) VALUES (randomblob(300))")
                at_txid[txid(w)] = n
                time.sleep(0.03)
            head = txid(w)
            wait_until(lambda: seen and seen[-1][0] == head, 15, message="the reader at the head")
        finally:
            stop.set()
            watcher.join()
        # Every state shown is whole (rows 1..k), in commit order, and the writer's own.
        assert all(c == m for _, c, m in seen), [s for s in seen if s[1] != s[2]][:5]
        assert [s[0] for s in seen] == sorted(s[0] for s in seen), "never older than seen"
        for t, c, _ in seen:
            if t in at_txid:
                assert c == at_txid[t], (t, c, at_txid[t])
        assert len({t for t, _, _ in seen}) > 10, "the reader followed along"
        assert all_tables_digest(r) == all_tables_digest(w)

        # Compaction and retention ran (L1, L2 and snapshots exist, early L0 files are gone)
        # and the reader followed the manifest all along: one listing, at open; once the
        # writer stops, polls are answered "not modified".
        time.sleep(1)
        f = feed(r)
        assert f["mode"] == "manifest" and f["listings"] == 1, f
        assert f["not_modified"] > 0 and f["manifest_gets"] > 20, f
        assert litestream_stats(r)["storage"]["list_requests"] == 1
        m = json.loads(s3_server.get(bucket, "db/manifest.json"))
        assert int(m["txid"], 16) == head
        levels = {f["level"] for f in m["files"]}
        assert levels & {1, 2, 9}, m
        r.close()
        w.close()


def manifest_in(s3_server, bucket: str) -> bool:
    return any(k == "db/manifest.json" for k, _ in s3_server.list_keys(bucket, "db/"))


def test_missing_corrupt_and_stale_manifests_fall_back_to_listing(tmp_path):
    """A reader lists when the manifest is missing, garbage or behind what it has seen, and
    follows again once a current one appears; a primary with the feed off removes a manifest
    an earlier term left."""
    root = tmp_path / "replica"
    url = root.as_uri()
    db = tmp_path / "app.db"

    def writer(**kw):
        return connect(vfs_uri(url, name=str(db), role="primary", sync="remote", **kw))

    def reader(name, **kw):
        return connect(vfs_uri(url, name=str(tmp_path / name), poll_interval="100ms",
                               poll_interval_max="0", **kw))

    def count(c):
        return c.execute("SELECT count(*) FROM t").fetchone()[0]

    # Missing: a replica without a manifest is followed by listing.
    w = writer(manifest="false")
    w.execute("CREATE TABLE t(x)")
    w.execute("INSERT INTO t VALUES (1)")
    assert not (root / "manifest.json").exists()
    a = reader("a.db")
    w.execute("INSERT INTO t VALUES (2)")
    wait_until(lambda: count(a) == 2, 10, message="followed by listing")
    f = feed(a)
    assert f["mode"] == "listing" and "missing" in f["refused"] and f["listings"] > 1, f

    # Garbage: the same.
    (root / "manifest.json").write_text("{not json")
    w.execute("INSERT INTO t VALUES (3)")
    wait_until(lambda: count(a) == 3, 10, message="followed past a corrupt manifest")
    wait_until(lambda: "unusable" in (feed(a)["refused"] or ""), 10)
    w.close()

    # A current manifest (a new term of the primary with the feed on): followed.
    w = writer()
    w.execute("INSERT INTO t VALUES (4)")
    wait_until(lambda: count(a) == 4 and feed(a)["mode"] == "manifest", 10,
               message="back on the manifest")
    assert int(manifest_of(root)["txid"], 16) == txid(w)
    old = (root / "manifest.json").read_bytes()
    w.execute("INSERT INTO t VALUES (5)")
    wait_until(lambda: count(a) == 5, 10)
    w.close()

    # Behind: the old manifest put back names a TXID older than what the reader has seen.
    (root / "manifest.json").write_bytes(old)
    wait_until(lambda: "behind" in (feed(a)["refused"] or ""), 10, message="stale manifest seen")
    b = reader("b.db")  # opened by listing: at 5 although the manifest says 4
    assert count(b) == 5
    listings = feed(a)["listings"]
    wait_until(lambda: feed(a)["listings"] > listings + 3, 10, message="a lists while behind")

    # The feed turned off: the new term removes the manifest; readers list and follow.
    w = writer(manifest="false")
    w.execute("INSERT INTO t VALUES (6)")
    wait_until(lambda: not (root / "manifest.json").exists(), 10, message="manifest removed")
    for c in (a, b):
        wait_until(lambda: count(c) == 6, 10, message="followed by listing again")
        assert "missing" in feed(c)["refused"]
    w.close()
    a.close()
    b.close()


def test_a_manifest_that_stops_changing_is_caught_by_listing(s3_server, tmp_path):
    """The store refuses every write of the manifest (a primary killed between an upload and
    its manifest looks the same to readers): COMMITs under sync=remote still return, and a
    reader that trusts the manifest catches up by its level-0 check every `list_interval`;
    with `list_interval=0` it stays where the manifest says."""
    from fault_proxy import FaultProxy
    bucket = s3_server.new_bucket("frozen")
    with FaultProxy(s3_server.endpoint, seed=1) as proxy:
        url = f"s3://{bucket}/db?endpoint={proxy.endpoint}&force-path-style=true"
        w = connect(vfs_uri(url, name=str(tmp_path / "app.db"), role="primary", sync="remote"))
        w.execute("CREATE TABLE t(x)")
        w.execute("INSERT INTO t VALUES (1)")
        wait_until(lambda: manifest_in(s3_server, bucket), 10)

        def reader(name, **kw):
            return connect(vfs_uri(url, name=str(tmp_path / name), poll_interval="100ms",
                                   poll_interval_max="0", **kw))

        checked = reader("c.db", list_interval="1s")
        # One replica object per URL in a process: the second reader names the same replica
        # with Litestream's other spelling of path style, so that it gets its own settings.
        url = url.replace("force-path-style", "forcePathStyle")
        never = reader("d.db", list_interval="0")
        for c in (checked, never):
            wait_until(lambda: feed(c)["mode"] == "manifest", 10)
        proxy.add("status", method="PUT", path="manifest.json", status=403, code="AccessDenied")
        for v in (2, 3):
            w.execute("INSERT INTO t VALUES (?)", (v,))  # sync=remote: in the replica
        count = lambda c: c.execute("SELECT count(*) FROM t").fetchone()[0]
        wait_until(lambda: count(checked) == 3, 10, message="the level-0 check found them")
        time.sleep(2)
        assert count(never) == 1, "list_interval=0 trusts a manifest that stopped changing"
        assert proxy.injected["status"] > 0
        # The store heals: the next upload writes the manifest again and everyone follows.
        proxy.heal()
        w.execute("INSERT INTO t VALUES (4)")
        wait_until(lambda: count(never) == 4 and count(checked) == 4, 10)
        for c in (checked, never, w):
            c.close()


def test_http_replica_served_by_a_static_server(tmp_path, ext_path):
    """A replica folder served by a plain static web server (no listing): our reader opens it
    through the manifest, follows a primary writing with compaction, and reads pages with
    ranged GETs; its polls are conditional GETs answered 304 while nothing changes. A
    replica without a manifest is refused with what is missing."""
    root = tmp_path / "site"
    url = (root / "app").as_uri()
    w = connect(vfs_uri(url, name=str(tmp_path / "app.db"), role="primary", sync="remote",
                        **FAST))
    w.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    w.executemany("INSERT INTO t(v) VALUES (randomblob(2000))", [()] * 200)
    with RangeServer(root) as srv:
        r = connect(vfs_uri(f"{srv.url}/app", name=str(tmp_path / "r.db"),
                            poll_interval="100ms", poll_interval_max="0"))
        assert r.execute("SELECT count(*) FROM t").fetchone()[0] == 200
        deadline = time.time() + 5
        while time.time() < deadline:  # compaction and retention run meanwhile
            w.execute("INSERT INTO t(v) VALUES (randomblob(2000))")
            time.sleep(0.05)
        head = txid(w)
        wait_until(lambda: txid(r) == head, 15, message="the HTTP reader at the head")
        assert all_tables_digest(r) == all_tables_digest(w)
        time.sleep(5)  # the last compactions, snapshot and retention rewrite the manifest
        since = len(srv.requests)
        time.sleep(1.5)
        quiet = srv.counts(since)
        assert quiet["304"] >= 3 and quiet["GET"] == quiet["304"], quiet
        c = srv.counts()
        assert c["206"] > 0 and c["PROPFIND"] == 0, c
        r.close()

        # Time travel and restore work from what the manifest names.
        out = tmp_path / "restored.db"
        rr = connect(vfs_uri(f"{srv.url}/app", name=str(tmp_path / "r2.db")))
        rr.execute("SELECT litestream_restore(?)", (str(out),))
        rr.close()
        assert all_tables_digest(sqlite3.connect(out)) == all_tables_digest(w)

        # No manifest (the same files without it): the open fails and says why.
        shutil.copytree(root / "app", root / "bare")
        (root / "bare" / "manifest.json").unlink()
        with pytest.raises(sqlite3.OperationalError) as e:
            connect(vfs_uri(f"{srv.url}/bare", name=str(tmp_path / "r3.db"), open_timeout="1s"))
        assert "manifest.json" in str(e.value), e.value
    w.close()


def test_litestream_restore_reads_a_replica_with_a_manifest(replica_url, tmp_path):
    """The manifest is one more object at the replica root: the real Litestream's restore is
    not disturbed by it."""
    url = replica_url("s3")
    w = connect(vfs_uri(url, name=str(tmp_path / "app.db"), role="primary", sync="remote"))
    w.execute("CREATE TABLE t(x)")
    w.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(50)])
    out = tmp_path / "out.db"
    restore(url, out)
    assert sqlite3.connect(out).execute("SELECT count(*) FROM t").fetchone()[0] == 50
    w.close()


def test_an_idle_primary_makes_no_request(s3_server, tmp_path):
    """Once its uploads, compactions and manifest have settled, a primary that nobody writes
    sends nothing to the store, however short its compaction intervals."""
    bucket = s3_server.new_bucket("idle")
    with LatencyProxy(s3_server.endpoint, delay=0) as proxy:
        url = f"s3://{bucket}/db?endpoint={proxy.endpoint}&force-path-style=true"
        w = connect(vfs_uri(url, name=str(tmp_path / "app.db"), role="primary", sync="remote",
                            **FAST))
        w.execute("CREATE TABLE t(x)")
        for i in range(20):
            w.execute("INSERT INTO t VALUES (?)", (i,))
        wait_shipped(w)
        time.sleep(6)  # every level, a snapshot, retention, the manifest
        since = len(proxy.log)
        time.sleep(6)
        idle = proxy.log[since:]
        assert idle == [], [(q.method, q.path) for q in idle]
        w.execute("INSERT INTO t VALUES (99)")
        wait_shipped(w)
        assert len(proxy.log) > since, "a commit is uploaded again"
        w.close()


RATE_CHILD = textwrap.dedent("""
    import json, sqlite3, sys, time
    ext, root, n, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    c = sqlite3.connect(":memory:"); c.enable_load_extension(True); c.load_extension(ext)
    conns = []
    for i in range(n):
        uri = (f"file:r{i}.db?vfs=litestream&replica_url=file://{root}/r{i}"
               f"&poll_interval=50ms&poll_interval_max=0")
        if rate and i == n - 1:
            uri += f"&max_requests_per_second={rate}"
        conns.append(sqlite3.connect(uri, uri=True))
        conns[-1].execute("SELECT count(*) FROM t").fetchone()
    def requests():
        total = 0
        for c in conns:
            s = json.loads(c.execute("PRAGMA litestream_stats").fetchone()[0])["storage"]
            total += s["get_requests"] + s["list_requests"]
        return total
    # The bound applies from the last open on; measure a window after it.
    time.sleep(1)
    before, t0 = requests(), time.time()
    time.sleep(4)
    print(json.dumps({"requests": requests() - before, "seconds": time.time() - t0,
                      "bound": json.loads(conns[0].execute("PRAGMA litestream_stats")
                                          .fetchone()[0])["poll"]["max_requests_per_second"]}))
""")


def test_request_rate_bound_holds_across_1000_replicas(tmp_path, ext_path):
    """1,000 replicas in one process, each polling every 50 ms (20,000 polls a second
    unbounded): with max_requests_per_second=200 given on one of them, all of them together
    stay within the bound."""
    src = tmp_path / "src"
    one_row_replica(src.as_uri(), tmp_path / "app.db")
    root = tmp_path / "many"
    for i in range(1000):
        shutil.copytree(src, root / f"r{i}")
    script = tmp_path / "child.py"
    script.write_text(RATE_CHILD)
    out = subprocess.run([child_python(), str(script), str(ext_path.with_suffix("")), str(root),
                          "1000", "200"], capture_output=True, text=True, timeout=300,
                         env=child_env())
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["bound"] == 200, got
    per_second = got["requests"] / got["seconds"]
    # One second's burst at most beyond the rate, over a 4-second window.
    assert 50 < per_second <= 200 * (1 + 1 / 4) + 5, got
