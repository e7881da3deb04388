"""Scenarios of Litestream's own VFS test suite (upstream `cmd/litestream-vfs/*_test.go`,
`vfs_test.go`, `vfs_write_test.go`), ported onto replicas written by the real `litestream
replicate` and run against this extension: following after the store stopped answering,
exact time travel at file timestamps, the write-enabled pragma, read transactions that outlive
the files their state reads, hydration across sessions, opening before the first snapshot,
empty listings, open descriptors, poll-interval edges, SQLite's cache spilling under misses,
and the lock page at every page size. Each test names the peer test it ports."""

import datetime as dt
import json
import os
import random
import sqlite3
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness.common import child_env, wait_until
from harness.data import (Appender, create_source_db, db_image, image_digest, insert_orders,
                          integrity_check, order_row, query_digest, rows_digest)
from harness.litestream import FAST_COMPACTION, restore
from harness.ltx import list_ltx
from harness.sqlite_hosts import child_python, connect, ext_path, vfs_uri
from fault_proxy import FaultProxy
from latency_proxy import LatencyProxy


def count(conn) -> int:
    return conn.execute("SELECT count(*) FROM orders").fetchone()[0]


@pytest.mark.parametrize("outage", ["blackhole-1s", "503-7s"])
def test_following_resumes_after_the_store_stops_answering(outage, s3_server, tmp_path,
                                                            litestream):
    """Ports TestVFS_StorageOutage / the chaos tests: every request black-holed for a second
    (answers never come), or refused with 503 for seven; the reader must follow again within
    two poll intervals of the store answering, whatever it was waiting on before."""
    src = tmp_path / "src.db"
    w = create_source_db(src, rows=100, overflow_rows=0)
    bucket = s3_server.new_bucket("outage")
    ls = litestream(src, s3_server.replica_url(bucket, "db"))
    ls.wait_synced()
    with FaultProxy(s3_server.endpoint, seed=3) as proxy:
        url = f"s3://{bucket}/db?endpoint={proxy.endpoint}&force-path-style=true"
        poll = 0.5
        conn = connect(vfs_uri(url, poll_interval=f"{int(poll * 1000)}ms"))
        assert count(conn) == 100
        if outage == "blackhole-1s":
            proxy.add("stall", rate=1.0, seconds=120)
            held = 1.0
        else:
            proxy.add("status", rate=1.0)
            held = 7.0
        time.sleep(0.1)
        insert_orders(w, 101, 50)
        time.sleep(held)
        proxy.heal()
        healed = time.monotonic()
        ls.wait_synced()
        wait_until(lambda: count(conn) == 150, 30, 0.02, message="the reader to follow again")
        took = time.monotonic() - healed
        print(f"{outage}: following again {took:.2f} s after the store answered")
        # Two poll intervals, plus the replication and the reader's own hedged retry.
        assert took < 2 * poll + 1.5, took


def ltx_timestamp(path: Path) -> int:
    """The Timestamp field of an LTX header: ms since the epoch (big-endian i64 at 32)."""
    return struct.unpack(">q", path.read_bytes()[32:40])[0]


def rfc3339_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")


def test_time_travel_at_exact_file_timestamps_matches_litestream_restore(tmp_path, litestream):
    """Ports TestVFS_TimeTravel*: at an instant exactly equal to a file's timestamp, and a
    millisecond after, the reader shows what `litestream restore -timestamp` restores."""
    src = tmp_path / "src.db"
    w = create_source_db(src, rows=10, overflow_rows=0)
    url = (tmp_path / "replica").as_uri()
    ls = litestream(src, url)
    ls.wait_synced()
    for k in range(4):
        insert_orders(w, 11 + 10 * k, 10)
        ls.wait_synced()
        time.sleep(0.3)
    ls.stop()
    l0 = sorted((tmp_path / "replica" / "ltx" / "0").glob("*.ltx"))
    assert len(l0) >= 4
    newest = max(ltx_timestamp(f) for f in l0)
    conn = connect(vfs_uri(url))
    latest = count(conn)
    checked = 0
    for f in l0[1:]:
        ts = ltx_timestamp(f)
        for at in (rfc3339_ms(ts), rfc3339_ms(ts + 1)):
            out = tmp_path / f"restore-{f.stem}-{at}.db"
            try:
                restore(url, out, timestamp=at)
            except subprocess.CalledProcessError as e:
                # Litestream 0.5.17 refuses an instant after its newest file ("timestamp
                # does not exist"); ours shows the newest state there.
                assert ts + 1 > newest, (f.name, at, e.stderr)
                conn.execute(f"PRAGMA litestream_time = '{at}'")
                assert count(conn) == latest
                checked += 1
                continue
            expected = sqlite3.connect(out).execute("SELECT count(*) FROM orders").fetchone()[0]
            conn.execute(f"PRAGMA litestream_time = '{at}'")
            assert count(conn) == expected, (f.name, at)
            checked += 1
    assert checked >= 6
    # What was set reads back as set, to the microsecond.
    at = rfc3339_ms(ltx_timestamp(l0[-1]))[:-1] + "457Z"
    conn.execute(f"PRAGMA litestream_time = '{at}'")
    assert conn.execute("PRAGMA litestream_time").fetchone()[0] == at
    assert conn.execute("SELECT litestream_time()").fetchone()[0] == at


def test_write_enabled_pragma(replica_url, tmp_path):
    """Ports TestVFS_WriteEnabled: the Go extension's switch reads 1 on a writer and 0 on a
    replica; 0 stops a writer's writes, 1 resumes them; other values are refused."""
    url = replica_url("file")
    db = tmp_path / "app.db"
    p = connect(vfs_uri(url, name=str(db), role="primary"))
    p.execute("CREATE TABLE t(x)")
    assert p.execute("PRAGMA litestream_write_enabled").fetchone()[0] == "1"
    assert p.execute("PRAGMA litestream_write_enabled = 0").fetchone()[0] == "0"
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        p.execute("INSERT INTO t VALUES (1)")
    assert p.execute("SELECT count(*) FROM t").fetchone()[0] == 0, "reads go on"
    assert p.execute("PRAGMA litestream_write_enabled = 1").fetchone()[0] == "1"
    p.execute("INSERT INTO t VALUES (2)")
    with pytest.raises(sqlite3.OperationalError, match="not 0 or 1"):
        p.execute("PRAGMA litestream_write_enabled = 'bogus'")
    # Another connection of the same database is not affected by this one's switch.
    q = connect(vfs_uri(url, name=str(db), role="primary"))
    p.execute("PRAGMA litestream_write_enabled = 0")
    q.execute("INSERT INTO t VALUES (3)")
    p.execute("PRAGMA litestream_write_enabled = 1")
    wait_until(lambda: not json.loads(
        p.execute("PRAGMA litestream_stats").fetchone()[0])["pending"], 30)

    r = connect(vfs_uri(url))
    assert r.execute("PRAGMA litestream_write_enabled").fetchone()[0] == "0"
    assert r.execute("PRAGMA litestream_write_enabled = 0").fetchone()[0] == "0"
    with pytest.raises(sqlite3.OperationalError, match="role=primary"):
        r.execute("PRAGMA litestream_write_enabled = 1")
    with pytest.raises(sqlite3.OperationalError, match="not 0 or 1"):
        r.execute("PRAGMA litestream_write_enabled = maybe")
    assert r.execute("SELECT count(*) FROM t").fetchone()[0] == 2


# ---------------------------------------------------------------------------------------------
# Read transactions under compaction and retention (ports TestVFS_Compaction* and the
# long-transaction cases of vfs_compaction_test.go)


def expected_digest(n: int) -> str:
    return rows_digest(order_row(i) for i in range(1, n + 1))


ORDERS = "SELECT * FROM orders ORDER BY id"


def fast_compacting(s3_server, tmp_path, litestream, rows, stem):
    """A source of `rows` orders replicated to a new bucket under fast compaction and 2 s L0
    retention, synced (Litestream runs until the test ends): (source path, replica URL)."""
    src = tmp_path / "src.db"
    w = create_source_db(src, rows=rows, overflow_rows=0)
    url = s3_server.replica_url(s3_server.new_bucket(stem), "db")
    litestream(src, url, config=FAST_COMPACTION).wait_synced()
    w.close()
    return src, url


def l0_files(url) -> set:
    return {(f.min_txid, f.max_txid) for f in list_ltx(url) if f.level == 0}


def newest(conn):
    """The row count and digest of one read transaction."""
    conn.execute("BEGIN")
    try:
        return conn.execute("SELECT count(*) FROM orders").fetchone()[0], query_digest(conn, ORDERS)
    finally:
        conn.execute("COMMIT")


def pin_on_l0(conn, url, attempts=40):
    """Begins a read transaction whose newest TXID is still only in an L0 file (no L1 file
    covers it yet): the files it reads are then compacted and deleted under it. Returns the
    number of rows it sees and the L0 files listed while it was pinned."""
    for _ in range(attempts):
        conn.execute("BEGIN")
        # max(id) reads the right-most path of the b-tree: the pages the newest files hold.
        n = conn.execute("SELECT max(id) FROM orders").fetchone()[0]
        txid = int(conn.execute("SELECT litestream_txid()").fetchone()[0], 16)
        files = list_ltx(url)
        if not any(f.level == 1 and f.max_txid >= txid for f in files):
            return n, {(f.min_txid, f.max_txid) for f in files if f.level == 0}
        conn.execute("COMMIT")
        time.sleep(0.15)
    pytest.fail("every state pinned was already compacted")


@pytest.mark.parametrize("retain", ["default", "none"])
def test_a_read_transaction_outlives_the_files_it_reads(retain, s3_server, tmp_path, litestream):
    """A read transaction pinned while the writer goes on and Litestream compacts the files
    its state reads, then deletes them (l0-retention 2 s). By default it reads on, exactly its
    state. With nothing kept (retain_size=1) a read of a deleted file fails with
    SQLITE_BUSY_SNAPSHOT ("snapshot too old"), never an I/O error, and the next transaction
    reads the newest state."""
    src, url = fast_compacting(s3_server, tmp_path, litestream, 300, "retain")
    params = {"poll_interval": "200ms", "cache_size": "64KB"}
    if retain == "none":
        params["retain_size"] = "1"
    r = connect(vfs_uri(url, **params))
    a = Appender(src, 301)
    a.start()
    outcomes = []
    try:
        for attempt in range(3):
            n, pinned_l0 = pin_on_l0(r, url)
            wait_until(lambda: not (pinned_l0 & l0_files(url)), 30, 0.2,
                       message="Litestream to delete the L0 files of the pinned state")
            time.sleep(1)  # the poller applies and re-points what replaced them
            try:
                got = query_digest(r, ORDERS)
                count = r.execute("SELECT count(*) FROM orders").fetchone()[0]
                outcomes.append("read")
                assert (count, got) == (n, expected_digest(n)), f"attempt {attempt}"
            except sqlite3.OperationalError as e:
                outcomes.append(e.sqlite_errorcode)
                assert e.sqlite_errorcode == 517, (e, e.sqlite_errorcode)  # BUSY_SNAPSHOT
            r.execute("ROLLBACK")
            stats = json.loads(r.execute("PRAGMA litestream_stats").fetchone()[0])
            print(f"attempt {attempt}: {outcomes[-1]}, retained {stats['retained']}")
            if retain == "none" and outcomes[-1] == 517:
                assert "snapshot too old" in stats["reads"]["last_error"]
                break
            # A new transaction reads the newest state, whole and consistent.
            m, got = newest(r)
            assert m >= n and got == expected_digest(m)
    finally:
        a.stop.set()
        a.join(10)
    assert a.error is None, a.error
    if retain == "default":
        assert outcomes == ["read"] * 3, outcomes
    else:
        assert 517 in outcomes, f"no read ever needed a deleted file: {outcomes}"
        m, got = newest(r)
        assert got == expected_digest(m)


def test_eight_readers_with_long_transactions_under_fast_retention_and_faults(
        s3_server, tmp_path, litestream):
    """Eight reader threads of one process hold read transactions of one to four seconds
    while a writer appends, Litestream compacts every 2 s and deletes L0 files 2 s later, and
    the readers' store answers 503, resets and truncates now and then. No read fails, and
    each transaction sees one consistent state: ids 1..n exactly, the same before and after
    its wait; states never go back."""
    src, url = fast_compacting(s3_server, tmp_path, litestream, 500, "readers")
    first_l0 = l0_files(url)
    with FaultProxy(s3_server.endpoint, seed=11) as proxy:
        proxy.add("status", rate=0.05)
        proxy.add("reset", rate=0.02)
        proxy.add("truncate", rate=0.02, method="GET")
        via = url.replace(s3_server.endpoint, proxy.endpoint)
        uri = vfs_uri(via, poll_interval="200ms", cache_size="256KB",
                      log_level=os.environ.get("T_LOG", "warn"))
        a = Appender(src, 501, pause=0.05)
        errors, seen = [], {}
        stop = threading.Event()

        def reader(k):
            rng = random.Random(k)
            conn = connect(uri, check_same_thread=False)
            last = 0
            try:
                while not stop.is_set():
                    conn.execute("BEGIN")
                    n = conn.execute("SELECT max(id) FROM orders").fetchone()[0]
                    time.sleep(rng.uniform(1.0, 4.0))
                    got = query_digest(conn, ORDERS)
                    again = conn.execute("SELECT count(*), max(id) FROM orders").fetchone()
                    conn.execute("COMMIT")
                    assert again == (n, n), (k, n, again)
                    assert got == expected_digest(n), (k, n)
                    assert n >= last, (k, last, n)
                    last = n
                    seen.setdefault(k, []).append(n)
            except Exception as e:  # noqa: BLE001
                errors.append((k, repr(e), getattr(e, "sqlite_errorcode", None)))
            finally:
                conn.close()

        threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
        a.start()
        for t in threads:
            t.start()
        time.sleep(20)
        stop.set()
        for t in threads:
            t.join(60)
        a.stop.set()
        a.join(10)
        injected = dict(proxy.injected)
        check = connect(uri)
        stats = json.loads(check.execute("PRAGMA litestream_stats").fetchone()[0])
    assert a.error is None, a.error
    assert not errors, errors
    print(f"transactions per reader: {[len(seen.get(k, [])) for k in range(8)]}; "
          f"faults {injected}; retained {stats['retained']}; storage {stats['storage']}")
    assert all(len(seen.get(k, [])) >= 3 for k in range(8)), seen
    assert sum(injected.values()) > 0
    # The scenario happened: the L0 files of the start were compacted and deleted.
    assert not (first_l0 & l0_files(url))
    assert stats["retained"]["dropped"] == 0


# ---------------------------------------------------------------------------------------------
# Hydration across sessions (ports the Go extension's hydration end-to-end test, which runs the
# sqlite3 shell with LITESTREAM_HYDRATION_ENABLED / LITESTREAM_HYDRATION_PATH)


def hydration_record(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def pages_in(record) -> int:
    done = (record or {}).get("done") or ""
    return sum(bin(int(done[i:i + 16], 16)).count("1") for i in range(0, len(done), 16))


HYDRATE = """
import json, sqlite3, sys, time
l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(sys.argv[1])
c = sqlite3.connect(sys.argv[2], uri=True)
deadline = time.time() + 120
while True:
    s = json.loads(c.execute("PRAGMA litestream_stats").fetchone()[0])
    state = s["hydration"]["state"]
    if state == "ready" or state.startswith("failed") or time.time() > deadline:
        break
    time.sleep(0.05)
print(json.dumps(s))
"""


def hydrate_in_child(uri) -> int:
    """Opens `uri` in a process of its own (one replica, its own counters), waits for the
    hydration to complete (written here, or by another process and adopted), and returns
    how many pages it fetched."""
    out = subprocess.run([child_python(), "-c", HYDRATE, str(ext_path()), uri],
                         capture_output=True, text=True, timeout=180, env=child_env())
    assert out.returncode == 0, out.stderr
    s = json.loads(out.stdout)
    assert s["hydration"]["state"] == "ready", s["hydration"]
    return s["hydration"]["pages_fetched"]


def test_hydration_goes_on_across_short_sessions(s3_server, tmp_path, litestream):
    """A `sqlite3` shell session that ends before hydration completes (every GET here takes
    0.4 s) leaves the unfinished copy and a record of the pages in it; the next session goes
    on from there and fetches less than a whole hydration does; the copy it completes is the
    database, byte for byte. A session after new commits adopts the complete copy at once and
    fetches only what changed."""
    src = tmp_path / "src.db"
    w = create_source_db(src, rows=6000, overflow_rows=0)
    bucket = s3_server.new_bucket("hydrate")
    # No L1 compaction during the test: it would merge the forty files below into one.
    ls = litestream(src, s3_server.replica_url(bucket, "db"),
                    config={"levels": [{"interval": "1h"}]})
    ls.wait_synced()
    # Forty more files, each changing a few pages of its own: the copy is fetched in several
    # rounds of ranged reads (one range per file at least).
    for k in range(40):
        w.execute("UPDATE orders SET note = ? WHERE id BETWEEN ? AND ?",
                  (f"round {k}", 1 + 150 * k, 10 + 150 * k))
        ls.wait_synced()
    ls.stop()  # no compaction while the sessions run: the replica holds still
    copy = tmp_path / "hydrated.db"
    unfinished = Path(str(copy) + ".hydrating")
    record = Path(str(unfinished) + ".state")
    with LatencyProxy(s3_server.endpoint, delay=0.4) as proxy:
        url = f"s3://{bucket}/db?endpoint={proxy.endpoint}&force-path-style=true"
        env = child_env({"LITESTREAM_REPLICA_URL": url,
                         "LITESTREAM_HYDRATION_ENABLED": "true",
                         "LITESTREAM_HYDRATION_PATH": str(copy),
                         "LITESTREAM_HEDGE_AFTER": "0",
                         "LITESTREAM_LOG_LEVEL": os.environ.get("T_LOG", "warn")})
        shell = subprocess.Popen(["sqlite3", "-bail"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=env)
        shell.stdin.write(f".load {ext_path()}\n.open file:replica.db?vfs=litestream\n"
                          "SELECT count(*) FROM orders;\n")
        shell.stdin.flush()
        # The session ends once some pages are in, long before all are.
        try:
            wait_until(lambda: pages_in(hydration_record(record)) > 0 or copy.exists()
                       or shell.poll() is not None,
                       60, 0.02, message="the first pages of the copy")
        finally:
            out, err = shell.communicate(".quit\n", timeout=60)
            print(f"first session's stderr:\n{err}")
        assert shell.returncode == 0 and out.strip() == "6000", (out, err)
        assert unfinished.exists() and not copy.exists()
        first = pages_in(hydration_record(record))
        # The next session goes on, then serves the complete copy.
        params = dict(hydration_enabled="true", hedge_after="0", poll_interval="100ms")
        resumed = hydrate_in_child(vfs_uri(url, hydration_path=str(copy), **params))
        assert copy.exists() and not unfinished.exists() and not record.exists()
        assert image_digest(copy.read_bytes()) == image_digest(db_image(src))
        # A whole hydration, for comparison: another path, nothing to go on from.
        full = hydrate_in_child(vfs_uri(url, hydration_path=str(tmp_path / "whole.db"),
                                        **params))
        print(f"first session left {first} pages; the second fetched {resumed}, "
              f"a whole hydration {full}")
        assert resumed <= full - first, (first, resumed, full)
        uri = vfs_uri(url, hydration_path=str(copy), **params)

        def stats(c):
            return json.loads(c.execute("PRAGMA litestream_stats").fetchone()[0])

        # New commits; a later session adopts the copy (fetches no page for it).
        ls.start()
        w.execute("UPDATE orders SET amount = amount + 1 WHERE id <= 20")
        ls.wait_synced()
        ls.stop()
        conn = connect(uri)
        wait_until(lambda: stats(conn)["hydration"]["state"] == "ready", 30, 0.05,
                   message="adopting the copy")
        s = stats(conn)
        native = sqlite3.connect(src)
        assert (conn.execute("SELECT count(*), sum(amount) FROM orders").fetchall()
                == native.execute("SELECT count(*), sum(amount) FROM orders").fetchall())
        s = stats(conn)
        print(f"adopted: {s['hydration']}")
        assert s["hydration"]["pages_served"] > 0, s["hydration"]
        assert s["hydration"]["pages_fetched"] == 0, s["hydration"]
        assert 0 < s["hydration"]["pages_current"] < s["pages"], s["hydration"]


def test_two_processes_hydrating_one_copy_fetch_it_once(s3_server, tmp_path, litestream):
    """Two processes open the replica with one hydration_path at once (every GET takes
    0.2 s): one writes the copy, holding a lock on it; the other finds it locked, waits,
    then adopts the complete copy. Between them the pages are fetched once, and the copy
    is the database, byte for byte."""
    src = tmp_path / "src.db"
    create_source_db(src, rows=6000, overflow_rows=0)
    bucket = s3_server.new_bucket("hydrate2")
    ls = litestream(src, s3_server.replica_url(bucket, "db"))
    ls.wait_synced()
    ls.stop()
    copy = tmp_path / "shared.db"
    with LatencyProxy(s3_server.endpoint, delay=0.2) as proxy:
        url = f"s3://{bucket}/db?endpoint={proxy.endpoint}&force-path-style=true"
        params = dict(hydration_enabled="true", hedge_after="0", poll_interval="100ms")
        uri = vfs_uri(url, hydration_path=str(copy), **params)
        fetched = []
        both = [threading.Thread(target=lambda: fetched.append(hydrate_in_child(uri)))
                for _ in range(2)]
        for t in both:
            t.start()
        for t in both:
            t.join()
        whole = hydrate_in_child(vfs_uri(url, hydration_path=str(tmp_path / "whole.db"),
                                         **params))
    print(f"fetched by the two processes: {sorted(fetched)}; a whole hydration: {whole}")
    assert sorted(fetched) == [0, whole], (fetched, whole)
    assert image_digest(copy.read_bytes()) == image_digest(db_image(src))


# ---------------------------------------------------------------------------------------------
# Opening, listing, polling and resources (ports of main_test.go and vfs_test.go)


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_open_waits_for_the_first_snapshot(backend, replica_url, tmp_path, litestream):
    """Ports TestVFS_WaitsForInitialSnapshot: an open on a replica that has no file yet waits
    (within `open_timeout`) instead of failing, and answers once the primary's first files
    land."""
    url = replica_url(backend)
    result = {}

    def open_and_count():
        try:
            c = connect(vfs_uri(url, open_timeout="30s", poll_interval="50ms"))
            result["rows"] = count(c)
            c.close()
        except Exception as e:  # noqa: BLE001
            result["error"] = e

    opener = threading.Thread(target=open_and_count)
    opener.start()
    time.sleep(0.5)
    assert opener.is_alive() and not result, result
    src = tmp_path / "src.db"
    create_source_db(src, rows=10, overflow_rows=0)
    started = time.monotonic()
    litestream(src, url)
    opener.join(30)
    assert result == {"rows": 10}, result
    print(f"{backend}: the open answered {time.monotonic() - started:.2f} s after "
          "Litestream started")


def test_empty_listings_keep_the_reader_polling(s3_server, tmp_path, litestream):
    """Ports TestVFS_S3EventualConsistency: the first listings come back empty (a store that
    does not show new objects yet); the open keeps listing instead of failing. While
    following, empty listings neither lose the state nor stop following."""
    src = tmp_path / "src.db"
    w = create_source_db(src, rows=100, overflow_rows=0)
    bucket = s3_server.new_bucket("eventual")
    ls = litestream(src, s3_server.replica_url(bucket, "db"))
    ls.wait_synced()
    with FaultProxy(s3_server.endpoint) as proxy:
        proxy.add("empty", method="LIST", count=3)
        url = f"s3://{bucket}/db?endpoint={proxy.endpoint}&force-path-style=true"
        conn = connect(vfs_uri(url, poll_interval="100ms", open_timeout="20s"))
        assert count(conn) == 100
        assert proxy.injected["empty"] == 3, proxy.injected
        # Following: a dozen empty listings while new commits land.
        proxy.add("empty", method="LIST", count=12)
        insert_orders(w, 101, 50)
        ls.wait_synced()
        seen = []
        while proxy.injected["empty"] < 15:
            seen.append(count(conn))
            time.sleep(0.01)
        wait_until(lambda: count(conn) == 150, 30, 0.02, message="the reader to follow")
        assert set(seen) <= {100, 150}, set(seen)
        stats = json.loads(conn.execute("PRAGMA litestream_stats").fetchone()[0])
        assert stats["poll"]["last_error"] is None, stats


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_open_file_handles_stay_bounded_and_none_leak(backend, replica_url, tmp_path,
                                                      litestream):
    """Ports TestVFS_FileDescriptorBudget: eight reader connections and a writer for three
    seconds under fast compaction and retention; the process's open descriptors stay under
    a bound, and once the connections are closed a second round leaves no more open than
    the first did (nothing leaks per round)."""
    src = tmp_path / "src.db"
    w = create_source_db(src, rows=200, overflow_rows=0)
    url = replica_url(backend)
    ls = litestream(src, url, config=FAST_COMPACTION)
    ls.wait_synced()
    uri = vfs_uri(url, poll_interval="10ms")
    next_id = [201]

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    def one_round():
        conns = [connect(uri) for _ in range(8)]
        stop = threading.Event()
        peak, errors = [fds()], []

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], fds())
                time.sleep(0.005)

        def read(c):
            while not stop.is_set():
                try:
                    c.execute("SELECT count(*), sum(amount) FROM orders").fetchone()
                except Exception as e:  # noqa: BLE001
                    errors.append(e)
                    return

        threads = [threading.Thread(target=read, args=(c,)) for c in conns]
        threads.append(threading.Thread(target=sample))
        for t in threads:
            t.start()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            insert_orders(w, next_id[0], 5)
            next_id[0] += 5
            time.sleep(0.02)
        stop.set()
        for t in threads:
            t.join()
        for c in conns:
            c.close()
        return peak[0], errors

    before = fds()
    peak1, errors1 = one_round()
    time.sleep(1)
    after1 = fds()
    peak2, errors2 = one_round()
    settled = wait_until(lambda: fds() <= after1, 10, 0.05, message="descriptors to settle")
    print(f"{backend}: {before} descriptors before, peaks {peak1} and {peak2}, "
          f"{after1} after the first round, {fds()} after the second")
    assert not errors1 and not errors2, (errors1, errors2)
    assert settled
    # The peer's budget: 64 descriptors for the replica's reads, whatever the load.
    assert max(peak1, peak2) - before <= 64, (before, peak1, peak2)


@pytest.mark.parametrize("interval_ms,fewest,most", [(5, 10, 500), (200, 1, 10)])
def test_poll_interval_edge_values(interval_ms, fewest, most, tmp_path, litestream):
    """Ports TestVFS_PollIntervalEdgeCases: a 5 ms and a 200 ms poll interval each poll as
    often as asked over 750 ms (within the peer's bounds); zero, negative and unit-less
    values are refused at open, naming the parameter."""
    src = tmp_path / "src.db"
    create_source_db(src, rows=10, overflow_rows=0)
    url = (tmp_path / "replica").as_uri()
    litestream(src, url).wait_synced()
    # poll_interval_max=0: steady polling, as the peer does (ours backs off by default when
    # nobody reads, which this idle connection would be; see the test of that in
    # test_read_replica.py).
    conn = connect(vfs_uri(url, poll_interval=f"{interval_ms}ms", poll_interval_max="0"))

    def polls() -> int:
        return json.loads(conn.execute("PRAGMA litestream_stats").fetchone()[0])["poll"]["polls"]

    start = polls()
    time.sleep(0.75)
    delta = polls() - start
    print(f"poll_interval={interval_ms}ms: {delta} polls in 750 ms")
    assert fewest <= delta <= most, delta
    for bad in ("0", "-5ms", "5"):
        with pytest.raises(sqlite3.OperationalError) as e:
            connect(vfs_uri(url, name="bad.db", poll_interval=bad))
        assert "poll_interval" in str(e.value), (bad, e.value)


def test_sqlite_cache_spill_under_a_cache_miss_storm(tmp_path, litestream):
    """Ports TestVFS_CacheMissStorm: SQLite's own cache at 64 KiB with spilling on and ours
    at 256 KiB, while the primary commits: every query (point lookups, MAX, full scans of
    table and index) gives exactly what the source held at some TXID."""
    src = tmp_path / "src.db"
    w = create_source_db(src, rows=3000, overflow_rows=0)
    url = (tmp_path / "replica").as_uri()
    ls = litestream(src, url)
    ls.wait_synced()
    conn = connect(vfs_uri(url, poll_interval="20ms", cache_size="256KB"))
    conn.execute("PRAGMA cache_size = -64")
    conn.execute("PRAGMA cache_spill = ON")
    appender = Appender(src, 3001, pause=0.02)
    appender.start()
    try:
        for i in range(100):
            conn.execute("BEGIN")
            n, top = conn.execute("SELECT count(*), max(id) FROM orders").fetchone()
            assert n == top, (n, top)
            if i % 10 == 0:
                assert query_digest(conn, ORDERS) == expected_digest(n), i
                by_customer = conn.execute(
                    "SELECT count(*) FROM orders INDEXED BY orders_customer "
                    "WHERE customer >= ''").fetchone()[0]
                assert by_customer == n, (by_customer, n)
            k = random.randint(1, n)
            assert conn.execute("SELECT * FROM orders WHERE id = ?", (k,)).fetchone() \
                == order_row(k)
            conn.execute("COMMIT")
    finally:
        appender.stop.set()
        appender.join()
    assert appender.error is None, appender.error
    ls.wait_synced()
    final = appender.next - 1
    wait_until(lambda: count(conn) == final, 30, 0.02, message="the reader to follow")
    assert integrity_check(conn) == "ok"


LOCK_PAGE_PAGE_SIZES = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]


@pytest.mark.parametrize("page_size", LOCK_PAGE_PAGE_SIZES)
def test_pages_around_the_lock_page(page_size, tmp_path, litestream):
    """Ports TestVFSFile_ReadAtLockPageBoundary, on a real replica: a database of just over
    1 GiB at each page size, so that SQLite's lock page (the page holding byte 2^30, never
    written) falls inside it. Rows whose overflow chains run across the lock page, and rows
    on pages after it, read back exactly."""
    src = tmp_path / "big.db"
    lock_pgno = (1 << 30) // page_size + 1
    w = sqlite3.connect(src, isolation_level=None)
    # Built without a journal (fast), then switched to WAL for Litestream.
    w.execute(f"PRAGMA page_size={page_size}")
    w.execute("PRAGMA journal_mode=OFF")
    w.execute("PRAGMA synchronous=OFF")
    w.execute("CREATE TABLE blobs(id INTEGER PRIMARY KEY, b BLOB)")
    w.execute("BEGIN")
    # 1 MiB rows: zeros, except the ones around the first GiB, which are random.
    w.execute("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1030) "
              "INSERT INTO blobs SELECT i, CASE WHEN i BETWEEN 1010 AND 1030 "
              "THEN randomblob(1048576) ELSE zeroblob(1048576) END FROM n")
    w.execute("CREATE TABLE after(id INTEGER PRIMARY KEY, v TEXT)")
    w.execute("INSERT INTO after SELECT id, 'after ' || id || hex(randomblob(16)) FROM blobs")
    w.execute("COMMIT")
    assert w.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    near = "SELECT id, b FROM blobs WHERE id BETWEEN 1005 AND 1030 ORDER BY id"
    rest = "SELECT * FROM after ORDER BY id"
    want = (query_digest(w, near), query_digest(w, rest))
    url = (tmp_path / "replica").as_uri()
    ls = litestream(src, url)
    # Nothing is written after Litestream starts: its first file is the whole database (the
    # digests below compare with the source, so an incomplete replica cannot pass).
    wait_until(lambda: list_ltx(url), 180, 0.2, message="Litestream's first file")
    ls.stop()  # (its own tables, created at start, are in the first file too)
    pages = w.execute("PRAGMA page_count").fetchone()[0]
    assert pages > lock_pgno, (pages, lock_pgno)
    conn = connect(vfs_uri(url))
    assert conn.execute("PRAGMA page_size").fetchone()[0] == page_size
    assert conn.execute("PRAGMA page_count").fetchone()[0] == pages
    assert (query_digest(conn, near), query_digest(conn, rest)) == want
    if page_size == 4096:
        # The whole image, restored through the extension, is the source's, byte for byte.
        out = tmp_path / "restored.db"
        conn.execute("SELECT litestream_restore(?)", (str(out),)).fetchone()
        assert image_digest(out.read_bytes()) == image_digest(db_image(src))
        out.unlink()
    conn.close()
    w.close()
    for f in tmp_path.glob("big.db*"):
        f.unlink()
