"""The SQL surface and the shared-replica machinery: litestream_stats, the cache, pragmas that
change settings, one replica shared by connections and threads, the environment fallback."""

import json
import os
import re
import sqlite3
import threading
import time

import pytest

from harness.common import wait_until
from harness.data import create_source_db, table_digest
from harness.sqlite_hosts import connect, load_extension, one_row_replica, vfs_uri


@pytest.fixture
def source(tmp_path, litestream, replica_url):
    """A 4 KiB-page source of ~3 MB (bigger than SQLite's own 2 MB page cache, so repeated
    scans do reach the VFS), replicated to file:// by the real Litestream."""
    db = tmp_path / "src.db"
    w = create_source_db(db, rows=30000, overflow_rows=4)
    url = replica_url("file")
    ls = litestream(db, url)
    ls.wait_synced()
    return w, url, ls


def stats(conn, schema=None):
    sql = "SELECT litestream_stats(?)" if schema else "SELECT litestream_stats()"
    args = (schema,) if schema else ()
    return json.loads(conn.execute(sql, args).fetchone()[0])


def page_gets(s: dict) -> int:
    """GETs of the replica's files: the storage counter without the polls' manifest GETs."""
    return s["storage"]["get_requests"] - s["poll"]["feed"]["manifest_gets"]


def test_stats_report_cache_and_storage(source, ext_path):
    w, url, _ = source
    r = connect(vfs_uri(url, poll_interval="200ms"), ext=ext_path)
    assert table_digest(r) == table_digest(w)
    s1 = stats(r)
    assert s1["txid"] == r.execute("SELECT litestream_txid()").fetchone()[0]
    assert s1["pages"] == r.execute("PRAGMA page_count").fetchone()[0]
    assert s1["storage"]["get_requests"] > 0 and s1["storage"]["get_bytes"] > 0
    assert s1["cache"]["misses"] > 0 and s1["cache"]["bytes"] <= s1["cache"]["capacity"]
    # Read-ahead: a cold scan costs far fewer requests than pages.
    assert page_gets(s1) < s1["pages"] / 4, s1
    # The same JSON through the pragma.
    assert json.loads(r.execute("PRAGMA litestream_stats").fetchone()[0])["txid"] == s1["txid"]

    # Warm: scanning again costs no request at all.
    assert table_digest(r) == table_digest(w)
    s2 = stats(r)
    assert page_gets(s2) == page_gets(s1), (s1, s2)
    assert s2["cache"]["hits"] > s1["cache"]["hits"]


def test_new_txid_invalidates_only_changed_pages(source, ext_path):
    w, url, ls = source
    r = connect(vfs_uri(url, poll_interval="200ms"), ext=ext_path)
    table_digest(r)
    before = stats(r)
    w.execute("UPDATE orders SET note = 'changed' WHERE id = 12345")
    ls.wait_synced()
    wait_until(lambda: r.execute("SELECT note FROM orders WHERE id = 12345").fetchone()[0]
               == "changed", 5, message="reader to see the update")
    assert table_digest(r) == table_digest(w)
    after = stats(r)
    assert after["txid"] > before["txid"]
    # One row changed: the rescan refetches a handful of pages at most, not the table.
    fetched = page_gets(after) - page_gets(before)
    missed = after["cache"]["misses"] - before["cache"]["misses"]
    assert fetched <= 6 and missed <= 6, (before, after)


def test_small_cache_stays_within_its_budget(source, ext_path):
    w, url, _ = source
    r = connect(vfs_uri(url, cache_size="256KB"), ext=ext_path)
    assert r.execute("PRAGMA litestream_cache_size").fetchone()[0] == str(256 * 1024)
    assert table_digest(r) == table_digest(w)
    s = stats(r)
    assert 0 < s["cache"]["bytes"] <= 256 * 1024, s
    # Growing it at run time: a second scan then fits and hits.
    assert r.execute("PRAGMA litestream_cache_size = '64MB'").fetchone()[0] == str(64 << 20)
    table_digest(r)
    table_digest(r)
    assert stats(r)["cache"]["bytes"] > 256 * 1024


def test_pragmas_read_and_set(source, ext_path):
    _, url, _ = source
    r = connect(vfs_uri(url, poll_interval="200ms", open_timeout="3s"), ext=ext_path)
    assert r.execute("PRAGMA litestream_poll_interval").fetchone()[0] == "200ms"
    assert r.execute("PRAGMA litestream_poll_interval = '2s'").fetchone()[0] == "2s"
    assert stats(r)["poll"]["interval"] == "2s"
    assert r.execute("PRAGMA litestream_open_timeout").fetchone()[0] == "3s"
    assert r.execute("PRAGMA litestream_replica_url").fetchone()[0] == url
    assert r.execute("PRAGMA litestream_lag").fetchone()[0] in ("0", "1")
    assert r.execute("SELECT litestream_lag()").fetchone()[0] in (0, 1)
    t = r.execute("SELECT litestream_time()").fetchone()[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,3})?Z", t), t
    assert r.execute("PRAGMA litestream_time").fetchone()[0] == t
    with pytest.raises(Exception, match="poll_interval"):
        r.execute("PRAGMA litestream_poll_interval = 'soon'").fetchall()
    assert r.execute("PRAGMA litestream_retain_size").fetchone()[0] == str(64 << 20)
    assert r.execute("PRAGMA litestream_retain_size = '8MB'").fetchone()[0] == str(8 << 20)
    assert stats(r)["retained"]["budget"] == 8 << 20
    with pytest.raises(Exception, match="retain_size"):
        r.execute("PRAGMA litestream_retain_size = 'plenty'").fetchall()
    with pytest.raises(Exception, match="read-only"):
        r.execute("PRAGMA litestream_txid = '0000000000000001'").fetchall()
    # Not a litestream database: the functions say so instead of guessing.
    plain = connect(":memory:", ext=ext_path)
    with pytest.raises(Exception, match="not a database opened with vfs=litestream"):
        plain.execute("SELECT litestream_txid()").fetchone()


def test_connections_share_one_replica(source, ext_path):
    w, url, _ = source
    a = connect(vfs_uri(url, name="a.db"), ext=ext_path)
    table_digest(a)
    gets = page_gets(stats(a))
    b = connect(vfs_uri(url, name="b.db"), ext=ext_path)
    # The second connection reads from the first one's cache: no new requests.
    assert table_digest(b) == table_digest(w)
    assert page_gets(stats(b)) == gets


def test_threads_read_concurrently(source, ext_path):
    w, url, _ = source
    want = table_digest(w)
    errors, results = [], []

    def reader(i):
        try:
            c = connect(vfs_uri(url, name=f"t{i}.db"), ext=ext_path)
            for _ in range(3):
                results.append(table_digest(c))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert results == [want] * 12


def test_environment_fallback(source, ext_path):
    w, url, _ = source
    os.environ["LITESTREAM_REPLICA_URL"] = url
    try:
        r = connect(vfs_uri(None, name="env.db"), ext=ext_path)
        assert table_digest(r) == table_digest(w)
    finally:
        del os.environ["LITESTREAM_REPLICA_URL"]


def test_attached_replica_and_schema_argument(source, ext_path, tmp_path):
    w, url, _ = source
    main = connect(str(tmp_path / "local.db"), ext=ext_path)
    main.execute("ATTACH ? AS rep", (vfs_uri(url, name="att.db"),))
    n = main.execute("SELECT count(*) FROM rep.orders").fetchone()[0]
    assert n == w.execute("SELECT count(*) FROM orders").fetchone()[0]
    assert main.execute("SELECT litestream_txid('rep')").fetchone()[0] == \
        stats(main, "rep")["txid"]
    with pytest.raises(Exception, match="not a database opened with vfs=litestream"):
        main.execute("SELECT litestream_txid('main')").fetchone()


def test_loading_twice_is_harmless(source, ext_path):
    _, url, _ = source
    load_extension(ext_path)
    for _ in range(2):
        c = sqlite3.connect(":memory:")
        c.enable_load_extension(True)
        c.load_extension(str(ext_path))
        c.load_extension(str(ext_path))
        assert c.execute("SELECT 1").fetchone() == (1,)
    r = connect(vfs_uri(url), ext=ext_path)
    assert r.execute("SELECT count(*) FROM orders").fetchone()[0] > 0
    assert r.execute("SELECT litestream_txid()").fetchone()[0]


def test_max_lag_fails_reads_of_a_replica_gone_quiet(tmp_path):
    """A replica deleted under a reader: with max_lag, reads of the newest state fail once the
    last successful poll is older than that, and litestream_last_error() says why (SQLite
    itself only says "disk I/O error"); without it the reader keeps answering, with
    litestream_lag() growing."""
    import shutil
    root = tmp_path / "replica"
    one_row_replica(root.as_uri(), tmp_path / "app.db")
    strict = connect(vfs_uri(root.as_uri(), name=str(tmp_path / "a.db"), max_lag="2s",
                             poll_interval="200ms", poll_interval_max="0"))
    lax = connect(vfs_uri(root.as_uri().replace("file:///", "file://localhost/"),
                          name=str(tmp_path / "b.db"), poll_interval="200ms",
                          poll_interval_max="0"))
    for c in (strict, lax):
        assert c.execute("SELECT count(*) FROM t").fetchone()[0] == 1
        assert c.execute("SELECT litestream_last_error()").fetchone()[0] is None
    shutil.rmtree(root)
    started = time.time()

    def fails():
        try:
            strict.execute("SELECT count(*) FROM t").fetchone()
            return False
        except sqlite3.OperationalError as e:
            return str(e)

    msg = wait_until(fails, 15, message="reads to fail past max_lag")
    assert "disk I/O error" in msg
    assert time.time() - started >= 1.5
    why = strict.execute("SELECT litestream_last_error()").fetchone()[0]
    assert "stale" in why and "max_lag=2s" in why and "deleted or replaced" in why, why
    assert lax.execute("SELECT count(*) FROM t").fetchone()[0] == 1
    assert lax.execute("SELECT litestream_lag()").fetchone()[0] >= 2
    assert "deleted or replaced" in lax.execute("SELECT litestream_last_error()").fetchone()[0]
