"""Primary (role=primary): a local database written through the VFS ships itself to the
replica. Oracles: the real `litestream restore`, the Go VFS extension, and our read replica."""

import json
import shutil
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

import pytest

from harness.common import child_env, wait_until
from harness.data import (ORDERS_SCHEMA, all_tables_digest, create_source_db, insert_orders,
                          integrity_check)
from harness.litestream import restore, txid_str
from harness.ltx import list_ltx, ltx_page_index, replica_max_txid
from harness.sqlite_hosts import (child_python, connect, go_vfs, litestream_stats, vfs_uri,
                                  wait_shipped)


def primary_uri(db: Path, url: str, **params) -> str:
    return vfs_uri(url, name=str(db), role="primary", **params)


def open_primary(db: Path, url: str, **params) -> sqlite3.Connection:
    return connect(primary_uri(db, url, **params))


stats = litestream_stats


def restored(url: str, tmp_path: Path, name: str) -> sqlite3.Connection:
    out = tmp_path / name
    restore(url, out)
    conn = sqlite3.connect(out)
    assert integrity_check(conn) == "ok"
    return conn


def workload(conn, big: bytes) -> None:
    """Inserts, updates, deletes, blobs larger than a page, schema changes, and a
    checkpoint of every mode in between."""
    conn.executescript(ORDERS_SCHEMA)
    insert_orders(conn, 1, 500)
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    conn.execute("BEGIN")
    conn.execute("UPDATE orders SET amount = amount + 1 WHERE id % 3 = 0")
    conn.execute("DELETE FROM orders WHERE id % 7 = 0")
    conn.execute("COMMIT")
    conn.execute("INSERT INTO orders(id, customer, amount, payload) VALUES (9001, 'big', 1, ?)", (big,))
    conn.execute("PRAGMA wal_checkpoint(FULL)")
    conn.execute("ALTER TABLE orders ADD COLUMN region TEXT DEFAULT 'eu'")
    conn.execute("CREATE TABLE audit(id INTEGER PRIMARY KEY, what TEXT)")
    conn.executemany("INSERT INTO audit(what) VALUES (?)", [(f"e{i}",) for i in range(300)])
    conn.execute("PRAGMA wal_checkpoint(RESTART)")
    conn.execute("BEGIN")
    conn.execute("INSERT INTO audit(what) VALUES ('rolled back')")
    conn.execute("ROLLBACK")
    conn.execute("DROP INDEX orders_customer")
    conn.execute("CREATE INDEX orders_amount ON orders(amount)")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("UPDATE orders SET payload = ? WHERE id = 9001", (big[::-1],))
    conn.execute("INSERT INTO orders(id, customer, amount, region) "
                 "SELECT id + 1000, customer, amount, 'us' FROM orders WHERE id <= 200")


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_workload_ships_and_every_reader_agrees(backend, replica_url, tmp_path):
    url = replica_url(backend)
    db = tmp_path / "app.db"
    conn = open_primary(db, url)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA litestream_role").fetchone()[0] == "primary"
    workload(conn, os.urandom(300_000))
    s = wait_shipped(conn)
    local = all_tables_digest(conn)
    assert "audit" in local and not any(t.startswith("_litestream") for t in local)
    assert conn.execute("SELECT count(*) FROM audit WHERE what = 'rolled back'").fetchone()[0] == 0

    # The real Litestream restores exactly the local database.
    assert all_tables_digest(restored(url, tmp_path, "restored.db")) == local
    # Our read replica, and the Go extension in its own process, see the same state.
    reader = connect(vfs_uri(url, name=str(tmp_path / "reader.db")))
    assert all_tables_digest(reader) == local
    assert reader.execute("SELECT litestream_txid()").fetchone()[0] == s["shipped_txid"]
    go_rows = go_vfs(url, ["SELECT count(*), sum(amount) FROM orders",
                           "SELECT count(*) FROM audit"])
    assert go_rows[0][0] == list(conn.execute("SELECT count(*), sum(amount) FROM orders").fetchone())
    assert go_rows[1][0][0] == 300
    # No file overlaps another: one L0 file per batch, TXIDs contiguous from 1.
    files = sorted((f.min_txid, f.max_txid) for f in list_ltx(url) if f.level == 0)
    assert files[0][0] == 1
    assert all(b[0] == a[1] + 1 for a, b in zip(files, files[1:])), files
    assert files[-1][1] == int(s["shipped_txid"], 16)

    # Reopened, the primary goes on with the next TXIDs.
    reader.close()
    conn.close()
    conn = open_primary(db, url)
    conn.execute("INSERT INTO audit(what) VALUES ('after reopen')")
    s2 = wait_shipped(conn)
    assert int(s2["shipped_txid"], 16) == int(s["shipped_txid"], 16) + 1
    assert all_tables_digest(restored(url, tmp_path, "restored2.db")) == all_tables_digest(conn)


def test_commit_is_shipped_by_close(replica_url, tmp_path):
    url = replica_url("file")
    # A long pause between uploads: only the flush at close can ship this in time.
    conn = open_primary(tmp_path / "app.db", url, sync_interval="60s")
    conn.execute("CREATE TABLE t(x)")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(50)])
    conn.close()  # the last connection: flushes within shutdown_timeout
    r = restored(url, tmp_path, "r.db")
    assert r.execute("SELECT count(*), sum(x) FROM t").fetchone() == (50, sum(range(50)))
    assert not (tmp_path / "app.db-wal").exists(), "the WAL of a fully shipped database is removed"


def test_wal_restarts_do_not_wait_for_shipping_and_lose_nothing(replica_url, tmp_path):
    url = replica_url("file")
    db = tmp_path / "app.db"
    # Uploads at most every 300 ms while the WAL restarts every few commits: many WAL
    # generations go by between two uploads, each kept in its mirror until it has shipped.
    conn = open_primary(db, url, sync_interval="300ms")
    conn.execute("PRAGMA wal_autocheckpoint=8")
    conn.execute("CREATE TABLE t(x, pad)")
    for i in range(400):
        conn.execute("INSERT INTO t VALUES (?, randomblob(900))", (i,))
    s = stats(conn)
    # The writer did not wait for uploads: most of it is still to ship, yet the WAL has been
    # restarted again and again (it stays far smaller than what was written).
    assert s["pending"], s
    assert (tmp_path / "app.db-wal").stat().st_size < 100 * 4096
    mirrors = list((tmp_path / "app.db-litestream" / "wal").iterdir())
    assert any(m.name.endswith(".sealed") for m in mirrors), mirrors
    conn.close()  # flushes every generation, then the WAL and the mirrors go
    assert not (tmp_path / "app.db-wal").exists()
    assert list((tmp_path / "app.db-litestream" / "wal").iterdir()) == []
    r = restored(url, tmp_path, "r.db")
    assert r.execute("SELECT count(*), sum(x) FROM t").fetchone() == (400, sum(range(400)))


def test_a_restart_whose_copy_fails_is_refused_and_loses_nothing(replica_url, tmp_path):
    url = replica_url("file")
    db = tmp_path / "app.db"
    conn = open_primary(db, url)
    conn.execute("CREATE TABLE t(x)")
    conn.execute("INSERT INTO t VALUES (0)")
    wait_shipped(conn)
    # The mirrors' folder becomes a file: the open mirror can still be written, but it can
    # no longer be sealed, so the restart cannot be made safe.
    mirrors = tmp_path / "app.db-litestream" / "wal"
    shutil.rmtree(mirrors)
    mirrors.write_text("not a folder")
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(1, 50)])
    conn.execute("PRAGMA busy_timeout=0")  # no retrying the refused restart for 5 s
    busy, log, done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    # Refused with SQLITE_BUSY: SQLite keeps the WAL (and goes on appending to it).
    assert busy == 1, (busy, log, done)
    assert (tmp_path / "app.db-wal").stat().st_size > 0
    conn.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(50, 100)])
    wait_shipped(conn)
    r = restored(url, tmp_path, "r.db")
    assert r.execute("SELECT count(*), sum(x) FROM t").fetchone() == (100, sum(range(100)))


def test_existing_database_ships_a_snapshot_first(replica_url, tmp_path):
    url = replica_url("s3")
    db = tmp_path / "old.db"
    create_source_db(db, rows=1500).close()
    conn = open_primary(db, url)
    s = wait_shipped(conn)
    assert s["shipped_txid"] == txid_str(1)
    assert [(f.level, f.min_txid, f.max_txid) for f in list_ltx(url)] == [(0, 1, 1)]
    conn.execute("DELETE FROM orders WHERE id < 100")
    wait_shipped(conn)
    assert all_tables_digest(restored(url, tmp_path, "r.db")) == all_tables_digest(conn)


def test_missing_local_database_is_restored_and_disagreement_is_an_error(replica_url, tmp_path):
    url = replica_url("file")
    a = open_primary(tmp_path / "a.db", url)
    a.execute("CREATE TABLE t(x)")
    a.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    assert wait_shipped(a)["restore"] is None, "nothing restored at this open"
    a.close()

    # b.db does not exist: it is restored from the replica, then continues it.
    b = open_primary(tmp_path / "b.db", url)
    assert b.execute("SELECT count(*) FROM t").fetchone()[0] == 100
    # Through the cold-start engine, every page fetched, in ranged reads.
    r = stats(b)["restore"]
    assert r["state"] == "done" and r["what"] == f"restore {tmp_path / 'b.db'}", r
    assert r["pages_done"] == r["pages_total"] > 0 and 0 < r["gets"] <= r["pages_total"], r
    before = int(stats(b)["shipped_txid"], 16)
    b.execute("INSERT INTO t VALUES (100)")
    assert int(wait_shipped(b)["shipped_txid"], 16) == before + 1
    b.close()

    # a.db shipped up to an older TXID than the replica now holds: a clear error...
    with pytest.raises(sqlite3.OperationalError, match="disagree.*restore=always"):
        open_primary(tmp_path / "a.db", url).execute("SELECT 1")
    # ...unless told which wins.
    a = open_primary(tmp_path / "a.db", url, restore="always")
    assert a.execute("SELECT count(*) FROM t").fetchone()[0] == 101
    a.close()


def test_refuses_what_would_stop_capture(replica_url, tmp_path):
    conn = open_primary(tmp_path / "app.db", replica_url("file"))
    with pytest.raises(sqlite3.OperationalError, match="WAL mode"):
        conn.execute("PRAGMA journal_mode=DELETE")
    with pytest.raises(sqlite3.OperationalError, match="exclusive locking mode"):
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    # sync is a setting of each connection: its pragma reads and sets it, and checks it.
    remote = open_primary(tmp_path / "remote.db", replica_url("file", "remote"), sync="remote")
    assert remote.execute("PRAGMA litestream_sync").fetchone()[0] == "remote"
    other = open_primary(tmp_path / "remote.db", replica_url("file", "remote"))
    assert other.execute("PRAGMA litestream_sync").fetchone()[0] == "local"
    assert other.execute("PRAGMA litestream_sync = remote").fetchone()[0] == "remote"
    assert remote.execute("PRAGMA litestream_sync = 'local'").fetchone()[0] == "local"
    assert remote.execute("PRAGMA litestream_sync").fetchone()[0] == "local"
    with pytest.raises(sqlite3.OperationalError, match="not local or remote"):
        remote.execute("PRAGMA litestream_sync = sometimes")
    with pytest.raises(sqlite3.OperationalError, match="role"):
        connect(vfs_uri(replica_url("file", "other"), name=str(tmp_path / "x.db"), role="leader"))
    # The Go extension's write mode is the same thing.
    go = connect(vfs_uri(replica_url("file", "go"), name=str(tmp_path / "go.db"),
                         write_enabled="true", sync_interval="1s"))
    assert go.execute("PRAGMA litestream_role").fetchone()[0] == "primary"


WRITER = textwrap.dedent("""
    import sqlite3, sys
    ext, uri, log, every = sys.argv[1:5]
    l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(ext)
    c = sqlite3.connect(uri, uri=True, isolation_level=None)
    c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
    with open(log, "a") as out:
        for i in range(1, 1_000_000):
            c.execute("INSERT INTO t VALUES (?, randomblob(3000))", (i,))
            if int(every) and i % int(every) == 0:
                c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            out.write(f"{i}\\n"); out.flush()   # after COMMIT returned
""")


def kill_writer_after(uri: str, log: Path, ext, commits: int, checkpoint_every=97) -> int:
    """Kills a writer (one INSERT a transaction, a TRUNCATE checkpoint every
    `checkpoint_every` of them, 0 for never) once it has committed `commits`."""
    p = subprocess.Popen([child_python(), "-c", WRITER, str(ext), uri, str(log),
                          str(checkpoint_every)],
                         env=child_env(), stderr=subprocess.PIPE)
    try:
        wait_until(lambda: log.exists() and len(log.read_text().split()) >= commits, 60)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    return int(log.read_text().split()[-1])


def ids(conn) -> list:
    return [r[0] for r in conn.execute("SELECT id FROM t ORDER BY id")]


@pytest.mark.parametrize("sync", ["local", "remote"])
def test_sigkill_mid_workload(sync, ext_path, replica_url, tmp_path):
    url = replica_url("s3")
    db = tmp_path / "app.db"
    # sync_interval=0: an upload after every round of the shipper, so that the kill lands
    # while files are being shipped, whichever the sync mode.
    committed = kill_writer_after(primary_uri(db, url, sync=sync, sync_interval="0"),
                                  tmp_path / "log", ext_path, 150)
    # The replica is restorable and holds a prefix of the committed transactions; with
    # sync=remote, every transaction whose COMMIT returned.
    shipped = ids(restored(url, tmp_path, "after-kill.db"))
    assert shipped == list(range(1, len(shipped) + 1))
    if sync == "remote":
        assert len(shipped) >= committed, (len(shipped), committed)
    # Reopened, the primary ships the rest, and nothing twice.
    conn = open_primary(db, url)
    local = ids(conn)
    assert local[:committed] == list(range(1, committed + 1))
    wait_shipped(conn)
    assert ids(restored(url, tmp_path, "after-reopen.db")) == local
    files = sorted((f.min_txid, f.max_txid) for f in list_ltx(url))
    assert all(b[0] == a[1] + 1 for a, b in zip(files, files[1:])), files


def test_two_primaries_on_one_replica(replica_url, tmp_path):
    url = replica_url("file")
    a = open_primary(tmp_path / "a.db", url)
    a.execute("CREATE TABLE t(who, n)")
    wait_shipped(a)
    # b.db is restored from the replica and both now think they continue it.
    b = open_primary(tmp_path / "b.db", url, sync="remote")
    for n in range(20):
        a.execute("INSERT INTO t VALUES ('a', ?)", (n,))
    wait_shipped(a)
    # b's first commit needs the claim of a TXID that a already wrote: it fails, and b stops.
    with pytest.raises(sqlite3.OperationalError):
        b.execute("INSERT INTO t VALUES ('b', 0)")
    assert "another primary" in stats(b)["stopped"]
    a.execute("INSERT INTO t VALUES ('a', 20)")
    wait_shipped(a)
    r = restored(url, tmp_path, "r.db")
    assert r.execute("SELECT count(*) FROM t WHERE who = 'b'").fetchone()[0] == 0
    assert r.execute("SELECT count(*) FROM t").fetchone()[0] == 21
    mins = [f.min_txid for f in list_ltx(url)]
    assert len(mins) == len(set(mins)), "nothing was overwritten or written twice"


def test_compaction_and_retention_keep_the_replica_readable(replica_url, tmp_path):
    url = replica_url("file")
    conn = open_primary(tmp_path / "app.db", url, levels="1s,2s", snapshot_interval="3s",
                        snapshot_retention="4s", l0_retention="1s")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v)")
    reader = connect(vfs_uri(url, name=str(tmp_path / "reader.db"), poll_interval="200ms"))
    deadline = time.time() + 9
    n = 0
    while time.time() < deadline:
        n += 1
        conn.execute("INSERT INTO t(v) VALUES (randomblob(500))")
        time.sleep(0.05)
        if n % 20 == 0:
            # A reader following the replica while files are compacted and deleted under it.
            assert reader.execute("SELECT count(*) FROM t").fetchone()[0] <= n
    head = int(wait_shipped(conn)["shipped_txid"], 16)
    time.sleep(3)  # one more round of every level and of retention

    levels = {}
    for f in list_ltx(url):
        levels.setdefault(f.level, []).append((f.min_txid, f.max_txid))
    assert levels.get(1) and levels.get(2) and levels.get(9), levels
    # Old L0 files and old snapshots are gone; what is left still reaches the head.
    assert all(a > 1 for a, _ in levels.get(0, [])), levels.get(0)
    assert len(levels.get(0, [])) < stats(conn)["uploads"]
    assert len(levels[9]) <= 2, levels[9]
    assert max(b for files in levels.values() for _, b in files) == head
    local = all_tables_digest(conn)
    assert all_tables_digest(restored(url, tmp_path, "r.db")) == local
    wait_until(lambda: reader.execute("SELECT litestream_txid()").fetchone()[0] == txid_str(head), 10)
    assert all_tables_digest(reader) == local
    assert go_vfs(url, ["SELECT count(*) FROM t"])[0][0][0] == n


def test_large_transaction_streams_from_disk(replica_url, tmp_path):
    url = replica_url("s3")
    conn = open_primary(tmp_path / "big.db", url)
    conn.execute("CREATE TABLE b(id INTEGER PRIMARY KEY, v BLOB)")
    conn.execute("BEGIN")
    for i in range(6):
        conn.execute("INSERT INTO b VALUES (?, randomblob(4000000))", (i,))
    conn.execute("COMMIT")
    wait_shipped(conn, timeout=120)
    biggest = max(f.size for f in list_ltx(url))
    assert biggest > 16 << 20, biggest  # above the one-request limit: a multipart upload
    r = restored(url, tmp_path, "r.db")
    assert r.execute("SELECT count(*), sum(length(v)) FROM b").fetchone() == (6, 24_000_000)
    assert all_tables_digest(r) == all_tables_digest(conn)


def test_checksums_when_asked_are_verified_by_restore(replica_url, tmp_path):
    url = replica_url("file")
    conn = open_primary(tmp_path / "sum.db", url, checksum="on")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    conn.executemany("INSERT INTO t(v) VALUES (randomblob(2000))", [()] * 300)
    conn.execute("DELETE FROM t WHERE id > 50")
    conn.execute("VACUUM")  # the database shrinks: pages leave the checksum
    conn.execute("INSERT INTO t(v) VALUES ('last')")
    wait_shipped(conn)
    for f in list_ltx(url):
        header = Path(f.location).read_bytes()[:48]
        flags, pre = int.from_bytes(header[4:8], "big"), int.from_bytes(header[40:48], "big")
        assert flags & 2 == 0, (f, flags)  # "no checksums" is not set
        assert (pre == 0) == (f.min_txid == 1), (f, pre)
    # Our restore checks the pages it writes against the last file's post-apply checksum.
    reader = connect(vfs_uri(url, name=str(tmp_path / "reader.db")))
    out = tmp_path / "verified.db"
    assert reader.execute("SELECT litestream_restore(?)", (str(out),)).fetchone()[0] > 0
    assert all_tables_digest(sqlite3.connect(out)) == all_tables_digest(conn)


def test_restore_never_ships_the_local_database_over_the_replica(replica_url, tmp_path):
    url = replica_url("file")
    a = open_primary(tmp_path / "a.db", url)
    a.execute("CREATE TABLE t(x)")
    a.execute("INSERT INTO t VALUES ('from a')")
    head = int(wait_shipped(a)["shipped_txid"], 16)
    a.close()
    other = tmp_path / "other.db"
    create_source_db(other, rows=300).close()
    b = open_primary(other, url, restore="never")
    s = wait_shipped(b)
    assert int(s["shipped_txid"], 16) == head + 1
    assert all_tables_digest(restored(url, tmp_path, "r.db")) == all_tables_digest(b)


# The state file (src/primary/state.rs): two slots of 64 KiB, each a record of magic,
# length, sequence, CRC-32 of (sequence, JSON), then the JSON; the newest valid one counts.
STATE_SLOT = 64 * 1024


def _state_records(db: Path) -> list:
    raw = (Path(f"{db}-litestream") / "state").read_bytes()
    records = []
    for slot in range(2):
        rec = raw[slot * STATE_SLOT:(slot + 1) * STATE_SLOT]
        if rec[:4] != b"LSST":
            continue
        n, seq, crc = struct.unpack(">IQI", rec[4:20])
        body = rec[20:20 + n]
        if zlib.crc32(rec[8:16] + body) == crc:
            records.append((seq, json.loads(body)))
    return sorted(records, key=lambda r: r[0])


def read_state(db: Path) -> dict:
    return _state_records(db)[-1][1]


def write_state(db: Path, state: dict) -> None:
    """Writes `state` as the newest record (as a crash could leave it), in slot 0."""
    seq = _state_records(db)[-1][0] + 1
    body = json.dumps(state).encode()
    seq_bytes = struct.pack(">Q", seq)
    rec = b"LSST" + struct.pack(">I", len(body)) + seq_bytes + \
        struct.pack(">I", zlib.crc32(seq_bytes + body)) + body
    with open(Path(f"{db}-litestream") / "state", "r+b") as f:
        f.write(rec)


def test_a_reopen_after_the_last_close_starts_afresh_with_its_own_settings(replica_url,
                                                                           s3_server, tmp_path):
    url = replica_url("s3")
    db = tmp_path / "app.db"
    conn = open_primary(db, url, shutdown_timeout="200ms")
    conn.execute("CREATE TABLE t(x)")
    wait_shipped(conn)
    moto = s3_server.proc.pid
    os.kill(moto, signal.SIGSTOP)
    try:
        # Its upload hangs, so the shipper still holds the primary after the last close
        # (whose flush gives up after 200 ms).
        conn.execute("INSERT INTO t VALUES (1)")
        wait_until(lambda: stats(conn)["encoded_txid"] != stats(conn)["shipped_txid"], 10)
        conn.close()
        resume = threading.Timer(0.5, os.kill, (moto, signal.SIGCONT))
        resume.start()
        # The open waits for the old primary to let go, then starts from the files on disk
        # with this open's settings (reusing the old one would keep sync=local).
        conn = open_primary(db, url, sync="remote")
    finally:
        os.kill(moto, signal.SIGCONT)
    assert stats(conn)["sync"] == "remote"
    conn.execute("INSERT INTO t VALUES (2)")  # returns once shipped
    r = restored(url, tmp_path, "r.db")
    assert r.execute("SELECT count(*), sum(x) FROM t").fetchone() == (2, 3)


def test_a_resync_cut_short_by_a_crash_is_done_again(replica_url, tmp_path):
    url = replica_url("file")
    db = tmp_path / "app.db"
    conn = open_primary(db, url)
    conn.execute("CREATE TABLE t(x)")
    conn.execute("INSERT INTO t VALUES (1)")
    head = int(wait_shipped(conn)["shipped_txid"], 16)
    conn.close()
    # As if the process died after deciding to ship the whole database (restore=never over
    # a replica it disagreed with) but before that file landed: the state names the
    # replica's head, with the resync still to do.
    state = read_state(db)
    write_state(db, {**state, "resync": True})
    conn = open_primary(db, url)
    s = wait_shipped(conn)
    # Without the flag the primary would go on from the WAL and ship nothing.
    assert int(s["shipped_txid"], 16) == head + 1
    assert read_state(db)["resync"] is False
    assert all_tables_digest(restored(url, tmp_path, "r.db")) == all_tables_digest(conn)


def test_upload_in_flight_at_a_crash_is_found_in_the_replica(replica_url, tmp_path):
    url = replica_url("file")
    db = tmp_path / "app.db"
    conn = open_primary(db, url)
    conn.execute("CREATE TABLE t(x)")
    wait_shipped(conn)
    before = read_state(db)
    conn.execute("INSERT INTO t VALUES (1)")
    wait_shipped(conn)
    after = read_state(db)
    conn.close()
    # As if the process died after the upload of the last file landed, before its state
    # was written: the state still names the one before, and the upload as in flight.
    # The close removed the WAL, so the database file alone holds both states (and the
    # state says how the close left the file).
    before["shipped"]["wal"] = after["shipped"]["wal"] = None
    left = read_state(db)["left"]
    assert left and left["len"] > 0, left
    write_state(db, {**before, "left": left,
                     "in_flight": [after["shipped"]["txid"], after["shipped"]]})
    conn = open_primary(db, url)  # without looking at the replica this would "disagree"
    conn.execute("INSERT INTO t VALUES (2)")
    s = wait_shipped(conn)
    assert int(s["shipped_txid"], 16) == after["shipped"]["txid"] + 1
    assert all_tables_digest(restored(url, tmp_path, "r.db")) == all_tables_digest(conn)


def test_a_wal_that_is_not_the_shipped_one_ships_the_whole_database(ext_path, replica_url,
                                                                     tmp_path):
    url = replica_url("file")
    db = tmp_path / "app.db"
    # No checkpoint: a kill right after a TRUNCATE would leave no WAL to disagree with.
    # sync_interval=0: the state names a shipped WAL position before the kill.
    kill_writer_after(primary_uri(db, url, sync_interval="0"), tmp_path / "log", ext_path, 30,
                      checkpoint_every=0)
    state = read_state(db)
    # The WAL on disk is of another generation than the state's (and than the upload in
    # flight's, if the kill left one), and not its successor.
    for pos in [state["shipped"]] + ([state["in_flight"][1]] if state["in_flight"] else []):
        pos["wal"]["salt1"] ^= 0xFFFF
        pos["wal"]["ckpt_seq"] += 7
    write_state(db, state)
    head = replica_max_txid(url)
    conn = open_primary(db, url)
    s = wait_shipped(conn)
    # One file with every page, right after what the replica holds.
    assert int(s["shipped_txid"], 16) == head + 1
    assert all_tables_digest(restored(url, tmp_path, "r.db")) == all_tables_digest(conn)


def test_writes_of_another_program_while_no_primary_is_open_are_shipped(replica_url, tmp_path):
    """While no process has the primary open, a program without the extension commits,
    checkpoints with TRUNCATE, commits again and closes (SQLite deletes the WAL): its
    transactions are in the database file only, with no WAL generation to follow. The next
    leader finds the file written since the last leader left it and ships the whole
    database. With the file as the last leader left it, it goes on from the replica."""
    url = replica_url("file")
    db = tmp_path / "app.db"
    conn = open_primary(db, url)
    conn.execute("CREATE TABLE t(x)")
    conn.execute("INSERT INTO t VALUES (1)")
    # Pages enough that a file of the whole database is told from one of a change.
    conn.execute("CREATE TABLE u(v)")
    conn.executemany("INSERT INTO u VALUES (randomblob(2000))", [()] * 100)
    wait_shipped(conn)
    conn.close()
    assert not Path(f"{db}-wal").exists()

    def pages_in(txid):
        f = next(f for f in list_ltx(url) if f.level == 0 and f.max_txid == txid)
        return len(ltx_page_index(Path(f.location).read_bytes()))

    # Nothing else wrote: the next commit is the next TXID on top of the replica, a file of
    # the pages it changed.
    conn = open_primary(db, url)
    conn.execute("INSERT INTO t VALUES (2)")
    s = wait_shipped(conn)
    assert pages_in(int(s["shipped_txid"], 16)) < 5
    conn.close()
    script = textwrap.dedent("""
        import sqlite3, sys
        c = sqlite3.connect(sys.argv[1], isolation_level=None)
        for i in range(100, 150):
            c.execute("INSERT INTO t VALUES (?)", (i,))
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        c.execute("INSERT INTO t VALUES (999)")
        c.close()
    """)
    subprocess.run([child_python(), "-c", script, str(db)], env=child_env(), check=True)
    assert not Path(f"{db}-wal").exists()
    head = replica_max_txid(url)
    conn = open_primary(db, url)
    s = wait_shipped(conn)
    assert int(s["shipped_txid"], 16) == head + 1
    assert pages_in(head + 1) == conn.execute("PRAGMA page_count").fetchone()[0]
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 53
    assert all_tables_digest(restored(url, tmp_path, "r.db")) == all_tables_digest(conn)
    conn.close()
