"""Time travel on a replica written by the real Litestream: batches committed a few seconds
apart, and for an instant inside each gap the reader shows exactly what was committed before
it — through the `time` URI parameter, PRAGMA litestream_time, litestream_set_time(), relative
phrases and ATTACH; LATEST follows the replica again; the past is read-only; an instant
before the first state is a clear error; litestream_restore and VACUUM INTO produce the
database that `litestream restore -timestamp` produces."""

import json
import datetime as dt
import math
import sqlite3
import time

import pytest

from harness.common import wait_until
from harness.data import create_source_db, insert_orders, table_digest
from harness.litestream import FAST_COMPACTION, Litestream
from harness.sqlite_hosts import connect, run_ext_child, vfs_uri

BATCH = 50
GAP = 3.0  # seconds between a batch being in the replica and the next commit


def instant(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s)


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


@pytest.fixture(scope="module")
def history(tmp_path_factory, ext_path):
    """Three batches; yields (url, source writer, [(instant inside the gap after batch k,
    row count then, orders digest then)], litestream)."""
    tmp = tmp_path_factory.mktemp("tt")
    db = tmp / "src.db"
    w = create_source_db(db, rows=BATCH, overflow_rows=2)
    url = f"file://{tmp}/replica"
    ls = Litestream(db, url, workdir=tmp).start()
    marks = []
    try:
        for k in range(3):
            if k:
                insert_orders(w, 1 + k * BATCH, BATCH)
            ls.wait_synced()
            t = time.time() + 0.1
            marks.append((t, w.execute("SELECT count(*) FROM orders").fetchone()[0],
                          table_digest(w)))
            time.sleep(GAP)
        insert_orders(w, 1 + 3 * BATCH, BATCH)  # the latest state, after the last gap
        ls.wait_synced()
        yield url, w, marks, ls
    finally:
        ls.stop()


def count(conn, schema="main"):
    return conn.execute(f"SELECT count(*) FROM {schema}.orders").fetchone()[0]


def test_uri_time_parameter(history, ext_path):
    url, w, marks, _ = history
    for k, (t, n, digest) in enumerate(marks):
        r = connect(vfs_uri(url, name=f"uri{k}.db", time=rfc3339(t)), ext=ext_path)
        assert count(r) == n
        assert table_digest(r) == digest
        assert instant(r.execute("SELECT litestream_time()").fetchone()[0]) == instant(rfc3339(t))


def test_pragma_function_and_latest(history, ext_path):
    url, w, marks, ls = history
    r = connect(vfs_uri(url, name="pragma.db", poll_interval="200ms"), ext=ext_path)
    latest = count(w)
    assert count(r) == latest
    txids = []
    for t, n, _ in marks:
        shown = r.execute(f"PRAGMA litestream_time = '{rfc3339(t)}'").fetchone()[0]
        assert instant(shown) == instant(rfc3339(t))
        assert count(r) == n
        txids.append(r.execute("SELECT litestream_txid()").fetchone()[0])
    assert txids == sorted(txids) and len(set(txids)) == 3
    r.execute("SELECT litestream_set_time(?)", (rfc3339(marks[0][0]),)).fetchone()
    assert count(r) == marks[0][1]
    # The past is read-only and does not follow the replica.
    with pytest.raises(sqlite3.OperationalError) as info:
        r.execute("INSERT INTO orders(id, customer, amount) VALUES (-1, 'x', 1)")
    assert info.value.sqlite_errorname == "SQLITE_READONLY"
    # While in the past, new commits are not shown...
    txid_then = r.execute("SELECT litestream_txid()").fetchone()[0]
    insert_orders(w, 10_000, 1)
    ls.wait_synced()
    time.sleep(0.6)  # three poll intervals
    assert count(r) == marks[0][1]
    assert r.execute("SELECT litestream_txid()").fetchone()[0] == txid_then
    # ... and LATEST follows the replica again.
    r.execute("PRAGMA litestream_time = 'LATEST'")
    wait_until(lambda: count(r) == latest + 1, 5, message="the reader to follow again")


def test_relative_phrases(history, ext_path):
    url, _, marks, _ = history
    r = connect(vfs_uri(url, name="relative.db"), ext=ext_path)
    for t, n, _ in marks:
        # An instant in the middle of the gap, said as "N seconds ago" (whole seconds, so it
        # lands within a second after the middle: still inside the gap).
        secs = math.floor(time.time() - (t + GAP / 2))
        r.execute("SELECT litestream_set_time(?)", (f"{secs} seconds ago",)).fetchone()
        assert count(r) == n, secs
        r.execute("SELECT litestream_set_time(?)", (f"-{secs}s",)).fetchone()
        assert count(r) == n, secs


def test_time_change_waits_for_the_next_transaction(history, ext_path):
    url, w, marks, _ = history
    r = connect(vfs_uri(url, name="txn.db"), ext=ext_path)
    r.execute("BEGIN")
    assert count(r) == count(w)
    r.execute("SELECT litestream_set_time(?)", (rfc3339(marks[0][0]),)).fetchone()
    assert count(r) == count(w), "the open read transaction keeps its state"
    r.execute("COMMIT")
    assert count(r) == marks[0][1]


def test_attach_past_and_present_in_one_statement(history, ext_path):
    url, w, marks, _ = history
    t, n, _ = marks[1]
    r = connect(vfs_uri(url, name="now.db"), ext=ext_path)
    r.execute("ATTACH ? AS past", (vfs_uri(url, name="past.db", time=rfc3339(t)),))
    new = r.execute("SELECT count(*) FROM orders o LEFT JOIN past.orders p USING(id) "
                    "WHERE p.id IS NULL").fetchone()[0]
    assert new == count(w) - n
    assert r.execute("SELECT litestream_txid('past') < litestream_txid()").fetchone()[0] == 1


def test_instant_before_the_first_state_is_an_error(history, ext_path):
    url, _, _, _ = history
    r = connect(vfs_uri(url, name="early.db"), ext=ext_path)
    with pytest.raises(sqlite3.Error, match="not after the earliest reachable state"):
        r.execute("PRAGMA litestream_time = '2001-01-01T00:00:00Z'").fetchall()
    with pytest.raises(sqlite3.Error, match="is not an instant") as info:
        r.execute("SELECT litestream_set_time('someday')").fetchall()
    assert info.value.sqlite_errorname == "SQLITE_ERROR", "a bad argument, not a failed open"
    assert count(r) > 0, "a failed change leaves the connection as it was"
    with pytest.raises(sqlite3.Error) as info:
        connect(vfs_uri(url, name="early2.db", time="2001-01-01T00:00:00Z"), ext=ext_path)
    assert info.value.sqlite_errorname == "SQLITE_CANTOPEN"
    assert "earliest reachable state" in str(info.value)


def test_restore_and_vacuum_into_match_litestream_restore(history, ext_path, tmp_path):
    url, _, marks, ls = history
    t, n, digest = marks[1]
    theirs = tmp_path / "theirs.db"
    ls.restore(theirs, timestamp=rfc3339(t))
    r = connect(vfs_uri(url, name="restore.db"), ext=ext_path)
    before = json.loads(r.execute("SELECT litestream_stats()").fetchone()[0])
    assert before["restore"] is None, "no cold start yet"
    ours = tmp_path / "ours.db"
    pages = r.execute("SELECT litestream_restore(?, ?)", (str(ours), rfc3339(t))).fetchone()[0]
    assert ours.read_bytes() == theirs.read_bytes(), "page-exact with litestream restore"
    assert pages * 4096 == ours.stat().st_size
    # It went through the cold-start engine: progress reached the end, in a few ranged
    # reads (not one a page), and the page cache readers share was not touched.
    after = json.loads(r.execute("SELECT litestream_stats()").fetchone()[0])
    p = after["restore"]
    assert p["state"] == "done" and p["percent"] == 100.0, p
    assert p["pages_done"] == p["pages_total"] > 0 and p["bytes_done"] == p["bytes_total"], p
    assert p["what"] == f"restore {ours}", p
    assert 0 < p["gets"] < p["pages_total"] / 4, p
    assert after["cache"]["entries"] == before["cache"]["entries"], (before["cache"], after["cache"])
    # The smallest parts, one at a time (a process of its own: a process shares one replica
    # per URL, with the first open's settings): the same bytes.
    small = tmp_path / "small.db"
    c = run_ext_child(
        vfs_uri(url, name="restore-small.db", restore_part_size="64KB", restore_concurrency="1"),
        [f"SELECT litestream_restore('{small}', '{rfc3339(t)}')", "SELECT litestream_stats()"])
    assert c.error is None, c.describe()
    assert small.read_bytes() == theirs.read_bytes()
    q = json.loads(c.results[3][0][0])["restore"]
    assert q["gets"] >= max(p["gets"], q["bytes_total"] // 65536), (p, q)
    # The shown state, restored without naming an instant, and VACUUM INTO.
    r.execute("PRAGMA litestream_time = ?".replace("?", f"'{rfc3339(t)}'")).fetchall()
    shown = tmp_path / "shown.db"
    r.execute("SELECT litestream_restore(?)", (str(shown),)).fetchone()
    assert shown.read_bytes() == theirs.read_bytes()
    vac = tmp_path / "vacuum.db"
    r.execute("VACUUM INTO ?", (str(vac),))
    for path in (ours, vac):
        c = sqlite3.connect(str(path))
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert table_digest(c) == digest and count(c) == n


@pytest.mark.slow
def test_time_travel_after_compaction(tmp_path, ext_path):
    """Litestream compacts L0 into L1 every 2 s and deletes compacted L0 files: instants are
    then resolved at the granularity of the files that remain, exactly as Litestream's own
    restore resolves them."""
    db = tmp_path / "src.db"
    w = create_source_db(db, rows=BATCH, overflow_rows=0)
    url = f"file://{tmp_path}/replica"
    ls = Litestream(db, url, workdir=tmp_path, config=FAST_COMPACTION).start()
    instants = []
    try:
        for k in range(4):
            if k:
                insert_orders(w, 1 + k * BATCH, BATCH)
            ls.wait_synced()
            instants.append(time.time() + 0.1)
            time.sleep(GAP)
        insert_orders(w, 1 + 4 * BATCH, BATCH)  # so that every instant has a later file
        ls.wait_synced()
        # Wait until compaction has removed the early L0 files.
        wait_until(lambda: min((f.min_txid for f in ls.list_ltx() if f.level == 0),
                               default=10**9) > 2, 30, interval=0.5,
                   message="L0 files to be compacted away")
        levels = {f.level for f in ls.list_ltx()}
        assert 1 in levels, levels
        r = connect(vfs_uri(url, name="compacted.db"), ext=ext_path)
        checked = 0
        for t in instants:
            theirs = tmp_path / f"theirs-{checked}.db"
            try:
                ls.restore(theirs, timestamp=rfc3339(t))
            except Exception:  # noqa: BLE001 - an instant the remaining files cannot reach
                with pytest.raises(sqlite3.Error):
                    r.execute(f"PRAGMA litestream_time = '{rfc3339(t)}'").fetchall()
                continue
            r.execute(f"PRAGMA litestream_time = '{rfc3339(t)}'").fetchall()
            want = sqlite3.connect(str(theirs))
            assert count(r) == count(want), rfc3339(t)
            assert table_digest(r) == table_digest(want)
            checked += 1
        assert checked >= 2, "most instants stay reachable after compaction"
    finally:
        ls.stop()


def test_history_lists_reachable_states(history, ext_path):
    url, w, marks, _ = history
    r = connect(vfs_uri(url, name="history.db"), ext=ext_path)
    rows = r.execute("SELECT txid, timestamp, level, file FROM litestream_history").fetchall()
    assert rows, "at least one state"
    txids = [int(t, 16) for t, _, _, _ in rows]
    assert txids == sorted(txids)
    assert max(txids) == int(r.execute("SELECT litestream_txid()").fetchone()[0], 16)
    assert all(f.startswith(f"ltx/{level}/") and f.endswith(".ltx") for _, _, level, f in rows)
    # Every listed state can be travelled to: it shows from just after its file's timestamp
    # (the rule of `litestream restore -timestamp`).
    for txid, ts, _, _ in rows[-3:]:
        after = rfc3339(instant(ts.replace("Z", "+00:00")).timestamp() + 0.001)
        r.execute("SELECT litestream_set_time(?)", (after,)).fetchone()
        assert int(r.execute("SELECT litestream_txid()").fetchone()[0], 16) >= int(txid, 16)
    r.execute("SELECT litestream_set_time('LATEST')").fetchone()
    # Each gap's instant lies after some listed state.
    stamps = [ts for _, ts, _, _ in rows]
    for t, _, _ in marks:
        assert any(instant(s) <= instant(rfc3339(t)) for s in stamps)
    # The schema argument; a schema that is not a replica is an error.
    r.execute("ATTACH ? AS past", (vfs_uri(url, name="hpast.db", time=rfc3339(marks[0][0])),))
    assert r.execute("SELECT count(*) FROM litestream_history('past')").fetchone()[0] == len(rows)
    with pytest.raises(sqlite3.Error, match="not a database opened with vfs=litestream"):
        r.execute("SELECT * FROM litestream_history('temp')").fetchall()
