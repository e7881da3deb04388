"""Every backend against a real server: Azure Blob (Azurite), GCS (fake-gcs-server behind
gcs_xml_shim.py), S3 (moto) and the local file system, the same tests for each. The real Litestream replicates to
the server and our extension reads it (rows, following, time travel, restore, each against
`litestream restore`); our primary writes to it with short compaction settings and
`litestream restore` reads that back, while a second primary on the same replica is refused
(create-only writes honoured by the server)."""

import dataclasses
import datetime as dt
import sqlite3
import time

import pytest

from harness.common import child_env, wait_until
from harness.data import (all_tables_digest, create_source_db, db_digests, insert_orders,
                          integrity_check, table_digest)
from harness.emulators import ReplicaSpec
from harness.litestream import Litestream, restore
from harness.ltx import list_ltx
from harness.sqlite_hosts import connect, litestream_stats, vfs_uri, wait_shipped

BACKENDS = ["abs", "gs", "s3", "file"]
SERVER_FIXTURE = {"abs": "azurite", "gs": "fake_gcs", "s3": "s3_server", "file": "file_root"}
BATCH = 100
GAP = 1.0  # seconds between a batch being in the replica and the next commit


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def count(conn) -> int:
    return conn.execute("SELECT count(*) FROM orders").fetchone()[0]


def txid(conn) -> int:
    return int(conn.execute("SELECT litestream_txid()").fetchone()[0], 16)


def level_folder(backend: str, level: int) -> str:
    """Where Litestream keeps a level: GCS and Azure like file:// (ltx/<decimal>/), S3 in
    4 hex digits without ltx/ (COMPAT.md)."""
    return f"{level:04x}/" if backend == "s3" else f"ltx/{level}/"


@pytest.fixture(scope="module")
def file_root(tmp_path_factory):
    """The "server" of file:// replicas: a folder."""
    return tmp_path_factory.mktemp("file-replicas")


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def server(backend, request):
    """The session's server of this backend (started on first use)."""
    return request.getfixturevalue(SERVER_FIXTURE[backend])


def replica_spec(backend: str, server, prefix: str) -> ReplicaSpec:
    if backend == "file":
        url = (server / prefix).as_uri()
        return ReplicaSpec(url=url, env={}, litestream_replica={"url": url}, litestream_env={})
    if backend == "s3":
        url = server.replica_url(server.make_bucket("backends"), prefix)
        return ReplicaSpec(url=url, env={}, litestream_replica={"url": url}, litestream_env={})
    return server.replica(prefix)


@dataclasses.dataclass
class Mark:
    """The source as it was at `instant` (inside the gap after a batch was replicated)."""
    instant: float
    rows: int
    digest: str


@dataclasses.dataclass
class Replicated:
    spec: ReplicaSpec
    writer: sqlite3.Connection
    ls: Litestream
    marks: list


@pytest.fixture(scope="module")
def replicated(backend, server, tmp_path_factory):
    """One `litestream replicate` per backend for the read tests: two batches a GAP apart
    (marks for time travel), then a third; the replica is in sync when this yields."""
    tmp = tmp_path_factory.mktemp(f"backends-{backend}")
    spec = replica_spec(backend, server, "replicated")
    w = create_source_db(tmp / "src.db", rows=BATCH, overflow_rows=3)
    ls = Litestream(tmp / "src.db", spec.url, workdir=tmp, env=spec.litestream_env,
                    replica_config=spec.litestream_replica).start()
    try:
        marks = []
        for k in range(2):
            if k:
                insert_orders(w, 1 + k * BATCH, BATCH)
            ls.wait_synced()
            marks.append(Mark(time.time() + 0.1, count(w), table_digest(w)))
            time.sleep(GAP)
        insert_orders(w, 1 + 2 * BATCH, BATCH)
        ls.wait_synced()
        yield Replicated(spec, w, ls, marks)
    finally:
        ls.stop()
        w.close()


@pytest.fixture
def rep(replicated, request) -> Replicated:
    # Litestream's log goes into the report of a failing test (conftest.py); so do the logs of
    # the emulator, which is why the tests name `server` among their arguments.
    request.node._litestreams = [replicated.ls]
    return replicated


def test_reads_what_litestream_replicated(rep, backend, server, ext_path):
    r = connect(vfs_uri(rep.spec.url, name=f"read-{backend}.db"), ext=ext_path)
    assert db_digests(r) == db_digests(rep.writer)
    assert integrity_check(r) == "ok"
    history = r.execute("SELECT txid, level, file FROM litestream_history").fetchall()
    assert history and all(f.startswith(level_folder(backend, level)) for _, level, f in history), \
        history
    assert int(history[-1][0], 16) == txid(r)


def test_follows_new_writes(rep, backend, server, ext_path):
    r = connect(vfs_uri(rep.spec.url, name=f"follow-{backend}.db", poll_interval="100ms"),
                ext=ext_path)
    before = txid(r)
    insert_orders(rep.writer, 10_000, 40)
    rep.writer.execute("UPDATE orders SET amount = amount + 1 WHERE id % 5 = 0")
    rep.writer.execute("DELETE FROM orders WHERE id % 11 = 0")
    want = db_digests(rep.writer)
    wait_until(lambda: db_digests(r) == want, 30, interval=0.1,
               message="the reader to show the new writes")
    assert txid(r) > before
    rep.ls.wait_synced()  # quiescent again for the next tests


def test_time_travel_matches_litestream_restore(rep, backend, server, ext_path, tmp_path):
    r = connect(vfs_uri(rep.spec.url, name=f"tt-{backend}.db"), ext=ext_path)
    for k, m in enumerate(rep.marks):
        theirs = tmp_path / f"theirs-{k}.db"
        rep.ls.restore(theirs, timestamp=rfc3339(m.instant))
        assert table_digest(sqlite3.connect(theirs)) == m.digest
        r.execute(f"PRAGMA litestream_time = '{rfc3339(m.instant)}'").fetchall()
        assert (count(r), table_digest(r)) == (m.rows, m.digest), k
        # The same instant as the `time` URI parameter.
        at = connect(vfs_uri(rep.spec.url, name=f"tt{k}-{backend}.db", time=rfc3339(m.instant)),
                     ext=ext_path)
        assert table_digest(at) == m.digest
        at.close()
    r.execute("PRAGMA litestream_time = 'LATEST'").fetchall()
    assert table_digest(r) == table_digest(rep.writer)


def test_restore_matches_litestream_restore(rep, backend, server, ext_path, tmp_path):
    r = connect(vfs_uri(rep.spec.url, name=f"restore-{backend}.db"), ext=ext_path)
    # At an instant in the past ...
    t = rfc3339(rep.marks[1].instant)
    ours, theirs = tmp_path / "ours-t.db", tmp_path / "theirs-t.db"
    r.execute("SELECT litestream_restore(?, ?)", (str(ours), t)).fetchone()
    rep.ls.restore(theirs, timestamp=t)
    assert ours.read_bytes() == theirs.read_bytes(), "page-exact with litestream restore"
    # ... and at the state shown (the TXID named to Litestream: it may have added one since).
    ours, theirs = tmp_path / "ours.db", tmp_path / "theirs.db"
    shown = txid(r)
    pages = r.execute("SELECT litestream_restore(?)", (str(ours),)).fetchone()[0]
    rep.ls.restore(theirs, txid=shown)
    assert ours.read_bytes() == theirs.read_bytes()
    assert pages * 4096 == ours.stat().st_size
    c = sqlite3.connect(ours)
    assert integrity_check(c) == "ok"
    assert table_digest(c) == table_digest(rep.writer)


# --------------------------------------------------------------------------------------------
# Our primary on the server


stats = litestream_stats


def shipped_txid(conn) -> int:
    """Waits until nothing committed is waiting to ship; returns the shipped TXID."""
    return int(wait_shipped(conn)["shipped_txid"], 16)


def levels_of(url: str) -> dict:
    out = {}
    for f in list_ltx(url):
        out.setdefault(f.level, []).append((f.min_txid, f.max_txid))
    return out


def test_primary_compacts_refuses_a_second_primary_and_litestream_restores_it(
        backend, server, ext_path, tmp_path):
    spec = replica_spec(backend, server, "primary")
    a = connect(vfs_uri(spec.url, name=str(tmp_path / "a.db"), role="primary", levels="1s,2s",
                        snapshot_interval="3s", snapshot_retention="4s", l0_retention="1s"),
                ext=ext_path)
    a.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT, v BLOB)")
    deadline = time.time() + 4
    n = 0
    while time.time() < deadline:
        n += 1
        a.execute("INSERT INTO t(who, v) VALUES ('a', randomblob(500))")
        time.sleep(0.05)
    wait_shipped(a)
    # Compaction wrote level 1 and 2 files and a snapshot, and retention removed the first
    # L0 files: all of it listed on the server.
    def compacted():
        lv = levels_of(spec.url)
        return lv if {1, 2, 9} <= lv.keys() and all(lo > 1 for lo, _ in lv.get(0, [])) else None

    found = wait_until(compacted, 20, interval=0.2, message="compacted levels on the server")
    assert len(found.get(0, [])) < stats(a)["uploads"], found

    # A second primary on the same replica from another local database (restored from it):
    # its first commit needs the claim of a TXID `a` already wrote, and the server refuses
    # the create-only write, so it stops.
    b = connect(vfs_uri(spec.url, name=str(tmp_path / "b.db"), role="primary", sync="remote"),
                ext=ext_path)
    for i in range(20):
        a.execute("INSERT INTO t(who, v) VALUES ('a', ?)", (i,))
    wait_shipped(a)
    with pytest.raises(sqlite3.OperationalError):
        b.execute("INSERT INTO t(who, v) VALUES ('b', 0)")
    assert "another primary" in stats(b)["stopped"]
    a.execute("INSERT INTO t(who, v) VALUES ('a', 'last')")
    head = shipped_txid(a)
    local = all_tables_digest(a)

    reader = connect(vfs_uri(spec.url, name=str(tmp_path / "reader.db")), ext=ext_path)
    wait_until(lambda: txid(reader) == head, 10, message="our reader at the head")
    assert all_tables_digest(reader) == local
    reader.close()
    b.close()
    a.close()

    out = tmp_path / "restored.db"
    restore(spec.url, out, replica_config=spec.litestream_replica,
            env=child_env(spec.litestream_env))
    c = sqlite3.connect(out)
    assert integrity_check(c) == "ok"
    assert all_tables_digest(c) == local
    assert c.execute("SELECT count(*) FROM t WHERE who = 'b'").fetchone()[0] == 0
    assert c.execute("SELECT count(*) FROM t").fetchone()[0] == n + 21
    # Nothing written twice: within a level, one file per starting TXID (snapshots all start
    # at TXID 1, so there one per ending TXID); the head is there.
    levels = levels_of(spec.url)
    for level, files in levels.items():
        keys = [hi if level == 9 else lo for lo, hi in files]
        assert len(keys) == len(set(keys)), (level, files)
    assert max(hi for files in levels.values() for _, hi in files) == head
