"""Reads on object storage. A replica written by the real Litestream to moto, read
through the latency proxy (no delay here: these tests count requests, never time them).

- b-tree prefetch and coalesced range reads return exactly the pages single reads return
  (the whole database restored from a cache filled by prefetch is byte-identical to the
  source), and make fewer requests;
- per-connection and per-statement counters in litestream_stats;
- request_budget fails a runaway statement with a clear error, and can be lifted;
- a GET that does not answer within hedge_after is sent again, and the second answer serves.
"""

import contextlib
import json
import random
import sqlite3
import time

import pytest

from harness.common import wait_until
from harness.data import create_source_db, db_image, image_digest, insert_overflow, transaction
from harness.litestream import Litestream, txid_str
from harness.ltx import list_ltx
from harness.sqlite_hosts import connect, ext_path, run_ext_child, run_sqlite_child, vfs_uri
from latency_proxy import LatencyProxy

ROWS = 12_000


@pytest.fixture(scope="module")
def replica(s3_server, tmp_path_factory):
    """(source db path, proxied replica URL, proxy): a chain of several LTX files (the first
    holds every page, later ones scattered updates and new rows with overflow pages)."""
    work = tmp_path_factory.mktemp("reads")
    src = work / "src.db"
    w = create_source_db(src, rows=ROWS, overflow_rows=5)
    bucket = s3_server.new_bucket("reads")
    ls = Litestream(src, s3_server.replica_url(bucket, "db"), workdir=work).start()
    try:
        ls.wait_synced()
        rnd = random.Random(6)
        for round_ in range(3):
            with transaction(w):
                for _ in range(40):
                    w.execute("UPDATE orders SET note = ? WHERE id = ?",
                              (f"updated {round_}", rnd.randint(1, ROWS)))
            insert_overflow(w, 100 + 10 * round_, 3, 4096)
            ls.wait_synced()
    finally:
        ls.stop()
    w.close()
    with LatencyProxy(s3_server.endpoint, delay=0) as proxy:
        yield src, proxied(proxy, bucket), proxy


def proxied(proxy, bucket):
    return f"s3://{bucket}/db?endpoint={proxy.endpoint}&force-path-style=true"


@contextlib.contextmanager
def live_replica(s3_server, tmp_path, litestream, stem):
    """A source database (6,000 rows) that Litestream keeps replicating while the test runs:
    yields (src, writer, litestream, proxied replica URL)."""
    src = tmp_path / "src.db"
    w = create_source_db(src, rows=6000, overflow_rows=3)
    bucket = s3_server.new_bucket(stem)
    ls = litestream(src, s3_server.replica_url(bucket, "db"))
    ls.wait_synced()
    with LatencyProxy(s3_server.endpoint, delay=0) as proxy:
        yield src, w, ls, proxied(proxy, bucket)


def update_and_follow(w, ls, conn, sql):
    """Runs `sql` on the source, waits for the replica, then for `conn` to show that TXID."""
    with transaction(w):
        w.execute(sql)
    txid = ls.wait_synced()
    wait_until(lambda: conn.execute("SELECT litestream_txid()").fetchone()[0]
               == txid_str(txid), 30, message="the reader to follow")


WORKLOAD = [
    "SELECT count(*), sum(length(note)), sum(length(payload)) FROM orders",
    "SELECT count(*), sum(amount) FROM orders WHERE customer BETWEEN 'cust0100' AND 'cust0300'",
] + [f"SELECT note FROM orders WHERE id = {i}" for i in random.Random(1).sample(range(1, ROWS), 50)]


# A scan of one b-tree (SQLite answers it from the covering index orders_customer), no
# overflow page read.
TREE_SCAN = "SELECT count(*), sum(amount) FROM orders"


def run(url, queries, **params):
    r = run_ext_child(vfs_uri(url, **params), queries)
    assert not r.crashed and not r.error, r.describe()
    return r.results[2:]


def stats_query():
    return "PRAGMA litestream_stats"


def test_prefetched_and_coalesced_pages_equal_single_reads(replica, tmp_path):
    src, url, proxy = replica
    native = sqlite3.connect(str(src))
    expected = [native.execute(q).fetchall() for q in WORKLOAD]
    image = db_image(src)
    results = {}
    for prefetch in (0, 512):
        out = tmp_path / f"restored-{prefetch}.db"
        # The workload first (prefetch fills the cache), then the restore, which reads every
        # page through the same cache: what prefetch put there is compared byte for byte.
        rows = run(url, [TREE_SCAN, stats_query()] + WORKLOAD +
                   [f"SELECT litestream_restore('{out}')", stats_query()],
                   prefetch=prefetch)
        assert [tuple(r) for r in rows[0]] == native.execute(TREE_SCAN).fetchall()
        got = rows[2:2 + len(WORKLOAD)]
        assert [[tuple(r) for r in q] for q in got] == expected, f"prefetch={prefetch}"
        assert out.read_bytes() == image, f"prefetch={prefetch}: restored pages differ"
        scan = json.loads(rows[1][0][0])
        final = json.loads(rows[-1][0][0])
        results[prefetch] = (scan, final)
    off, on = results[0][0], results[512][0]
    assert on["prefetch"] == 512 and off["prefetch"] == 0
    # The full scan: prefetch turns the leaf reads into a few coalesced ones (how many
    # depends on how Litestream split the chain into files).
    assert off["statement"]["get_requests"] > 5, off
    assert on["statement"]["get_requests"] * 2 < off["statement"]["get_requests"], (on, off)
    # Connection counters add up over statements; the per-statement ones restart.
    for _scan, final in results.values():
        assert final["connection"]["get_requests"] >= final["statement"]["get_requests"]
        assert final["connection"]["get_bytes"] > 0
    assert results[512][1]["connection"]["get_requests"] < results[0][1]["connection"]["get_requests"]


def test_stats_count_what_the_proxy_saw(replica):
    src, url, proxy = replica
    mark = len(proxy.log)
    # (no hedging: a hedge that lost is logged by the proxy only when it ends)
    rows = run(url, [WORKLOAD[0], stats_query()], prefetch=0, hedge_after="0")
    time.sleep(0.2)  # the proxy logs a request after answering it
    seen = proxy.counts(mark)
    stats = json.loads(rows[1][0][0])
    # Every GET of this process is either the open's (listing aside) or the connection's.
    assert 0 < stats["connection"]["get_requests"] <= seen["get"], (stats, seen)
    assert stats["storage"]["get_requests"] == seen["get"], (stats, seen)
    assert stats["storage"]["get_bytes"] == seen["get_bytes"], (stats, seen)


def test_request_budget_fails_a_runaway_statement_clearly(replica):
    src, url, proxy = replica
    native = sqlite3.connect(str(src))
    scan = WORKLOAD[0]
    steps = [
        {"op": "load", "path": str(ext_path())},
        {"op": "open", "name": "db",
         "uri": vfs_uri(url, prefetch=0, request_budget=3)},
        {"op": "query", "conn": "db", "sql": scan, "continue_on_error": True},
        {"op": "query", "conn": "db", "sql": "PRAGMA litestream_stats"},
        {"op": "query", "conn": "db", "sql": "PRAGMA litestream_request_budget"},
        {"op": "query", "conn": "db", "sql": "PRAGMA litestream_request_budget = 0"},
        {"op": "query", "conn": "db", "sql": scan},
        {"op": "query", "conn": "db", "sql": "PRAGMA litestream_request_budget = 'lots'",
         "continue_on_error": True},
    ]
    r = run_sqlite_child(steps)
    assert not r.crashed and not r.error, r.describe()
    failed, stats, budget, _set, ok, bad = r.results[2:]
    assert "error" in failed and "I/O" in failed["error"]["message"], failed
    stats = json.loads(stats[0][0])
    assert "request_budget exceeded" in stats["reads"]["last_error"], stats
    assert stats["statement"]["get_requests"] <= 3, stats
    assert budget == [["3"]]  # (pragmas answer text)
    assert [tuple(x) for x in ok] == native.execute(scan).fetchall()
    assert "request_budget" in bad["error"]["message"], bad
    assert "request_budget exceeded" in r.stderr, r.stderr[-2000:]


def test_prefetch_parameter_is_checked(replica):
    src, url, proxy = replica
    r = run_ext_child(vfs_uri(url, prefetch="many"), ["SELECT 1"])
    assert r.error and "prefetch" in r.error["message"], r.describe()
    rows = run(url, ["PRAGMA litestream_prefetch", "PRAGMA litestream_prefetch = 7",
                     "PRAGMA litestream_prefetch"], prefetch=3)
    assert rows == [[["3"]], [["7"]], [["7"]]]


@pytest.mark.parametrize("hedge_after", ["100ms", "0"])
def test_a_stalled_get_is_hedged(replica, hedge_after):
    src, url, proxy = replica
    native = sqlite3.connect(str(src))
    proxy.stall(1, 2.0)  # the first ranged GET of the child (loading the page index)
    rows = run(url, [TREE_SCAN, stats_query(), "PRAGMA litestream_hedge_after"],
               hedge_after=hedge_after)
    assert [tuple(r) for r in rows[0]] == native.execute(TREE_SCAN).fetchall()
    storage = json.loads(rows[1][0][0])["storage"]
    if hedge_after == "0":
        assert storage["hedged"] == 0, storage
        assert rows[2] == [["0"]]
    else:
        assert storage["hedged"] >= 1 and storage["hedge_wins"] >= 1, storage
        assert rows[2] == [["100ms"]]


def test_disk_cache_restart_warm_shared_and_never_older(s3_server, tmp_path, litestream):
    """cache_path: a restarted reader answers from disk without GETs; two processes share the
    folder; after the primary changes, readers see the new state, never a cached older page
    (the memory cache is kept tiny so that reads go to the disk cache)."""
    cache = tmp_path / "disk-cache"
    with live_replica(s3_server, tmp_path, litestream, "disk") as (src, w, ls, url):
        # Litestream writes its start-up snapshot (and an L1 file) of the same TXID shortly
        # after the first L0 file: the disk cache is keyed by file, so wait until the files
        # the readers plan from are settled.
        wait_until(lambda: any(f.level == 9 for f in list_ltx(url)), 30,
                   message="Litestream's start-up snapshot")
        time.sleep(0.5)
        params = dict(cache_path=str(cache), cache_size="16KB", poll_interval="100ms")
        queries = [TREE_SCAN, WORKLOAD[0], WORKLOAD[1], stats_query()]

        def expect(rows):
            native = sqlite3.connect(str(src))
            for q, got in zip(queries[:3], rows):
                assert [tuple(r) for r in got] == native.execute(q).fetchall(), q
            return json.loads(rows[3][0][0])

        first = expect(run(url, queries, **params))
        assert first["disk_cache"]["writes"] > 0, first["disk_cache"]
        # A restart: every page from disk, no GET for any statement.
        again = expect(run(url, queries, **params))
        assert again["connection"]["get_requests"] == 0, again["connection"]
        assert again["disk_cache"]["hits"] > 0 and again["disk_cache"]["writes"] == 0, again

        # Two processes at once on one folder (one of them also fills it), both right.
        fresh = tmp_path / "disk-cache-2"
        both = dict(params, cache_path=str(fresh))
        import concurrent.futures
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            outs = list(pool.map(lambda _: run(url, queries, **both), range(2)))
        for rows in outs:
            expect(rows)
        third = expect(run(url, queries, **both))
        fills = [json.loads(o[3][0][0]) for o in outs]
        assert third["connection"]["get_requests"] == 0, (
            third["storage"], third["disk_cache"],
            [(f["storage"], f["disk_cache"]) for f in fills])
        assert not list(fresh.rglob("*.tmp")), "temporary entries left behind"

        # The primary changes every row's amount: a reader of the new state gets new pages.
        with transaction(w):
            w.execute("UPDATE orders SET amount = amount + 1")
        ls.wait_synced()
        changed = expect(run(url, queries, **params))
        assert changed["connection"]["get_requests"] > 0
        # In this process: a connection that read the old state and kept its disk cache sees
        # the new state once it arrives, through a tiny memory cache.
        conn = connect(vfs_uri(url, **params))
        before = conn.execute(TREE_SCAN).fetchone()
        update_and_follow(w, ls, conn, "UPDATE orders SET amount = amount * 2 WHERE id % 3 = 0")
        after = conn.execute(TREE_SCAN).fetchone()
        assert after != before
        assert after == sqlite3.connect(str(src)).execute(TREE_SCAN).fetchone()
        conn.close()


def test_hydration_serves_the_copy_and_follows_the_replica(s3_server, tmp_path, litestream):
    """hydration_enabled: a full local copy is restored in the background; once ready, reads
    come from it without GETs; pages the primary changes afterwards come from the replica,
    never from the (older) copy; when most pages changed, the new state is hydrated again."""
    copy = tmp_path / "hydrated.db"
    with live_replica(s3_server, tmp_path, litestream, "hydrate") as (src, w, ls, url):
        # A path without hydration_enabled is ignored (as the Go extension ignores it).
        r = run_ext_child(vfs_uri(url, hydration_path=str(copy)), ["SELECT 1"])
        assert r.error is None and not copy.exists(), r.describe()

        conn = connect(vfs_uri(url, hydration_enabled="true",
                               hydration_path=str(copy), cache_size="16KB",
                               poll_interval="100ms"))

        def stats():
            return json.loads(conn.execute("PRAGMA litestream_stats").fetchone()[0])

        wait_until(lambda: stats()["hydration"]["state"] != "hydrating", 60,
                   message="hydration")
        assert stats()["hydration"]["state"] == "ready", stats()["hydration"]
        assert image_digest(copy.read_bytes()) == image_digest(db_image(src))
        # Brought by the cold-start engine: its progress reached the end, in ranged reads.
        p = stats()["restore"]
        assert p["what"] == "hydration" and p["state"] == "done", p
        assert p["pages_done"] == p["pages_total"] == stats()["hydration"]["pages_fetched"], p
        assert 0 < p["gets"] < p["pages_total"] / 4, p
        native = sqlite3.connect(str(src))
        before = conn.execute(TREE_SCAN).fetchall()
        assert before == native.execute(TREE_SCAN).fetchall()
        s = stats()
        assert s["statement"]["get_requests"] == 0, (s["hydration"], s["txid"])
        served = s["hydration"]["pages_served"]
        assert served > 0

        update_and_follow(w, ls, conn,
                          "UPDATE orders SET amount = amount + 7 WHERE customer < 'cust0010'")
        after = conn.execute(TREE_SCAN).fetchall()
        assert after == native.execute(TREE_SCAN).fetchall() and after != before
        s = stats()
        assert s["statement"]["get_requests"] > 0, "changed pages come from the replica"
        assert s["hydration"]["pages_served"] > served, ("unchanged ones from the copy", s["hydration"], s["statement"], s["pages"])
        for q in WORKLOAD[:2]:
            assert conn.execute(q).fetchall() == native.execute(q).fetchall(), q

        # Most pages change: once fewer than half of the copy's are current, the newest state
        # is hydrated again, and reads come from the new copy.
        update_and_follow(w, ls, conn, "UPDATE orders SET note = note || '!'")
        txid = conn.execute("SELECT litestream_txid()").fetchone()[0]
        wait_until(lambda: stats()["hydration"]["txid"] == txid, 60,
                   message="hydrating the new state")
        assert image_digest(copy.read_bytes()) == image_digest(db_image(src))
        for q in WORKLOAD[:2]:
            assert conn.execute(q).fetchall() == native.execute(q).fetchall(), q
        s = stats()
        assert s["statement"]["get_requests"] == 0, s["statement"]
        assert s["hydration"]["state"] == "ready", s["hydration"]
        conn.close()
