"""The primary and the reader against a misbehaving object store: moto behind a proxy that
answers 503 SlowDown, resets connections, loses answers after the store applied the
request, truncates bodies and stalls (`fault_proxy.py`).

The promise under test (README, "sync=remote"): a COMMIT that returned OK is in the
replica; one that failed with SQLITE_IOERR_VNODE (6922) is committed locally and ships
once the store answers again; one that failed otherwise is in neither. After healing, the
replica equals the local database. Oracle: the real `litestream restore`, reading moto
directly."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from harness.common import child_env, wait_until
from harness.data import create_source_db, rows_digest, transaction
from harness.litestream import Litestream, restore
from harness.ltx import list_ltx
from harness.sqlite_hosts import child_python, connect, run_ext_child, vfs_uri
from fault_proxy import FaultProxy

NOT_REPLICATED = 6922  # SQLITE_IOERR_VNODE

# A writer in its own process: `n` single-row transactions from `start`, each outcome
# logged after the COMMIT returned; then, once `go_on` exists, waits until everything has
# shipped and closes (with `go_on` "-", closes at once: the close ships what it can).
WRITER = textwrap.dedent("""
    import json, os, sqlite3, sys, time
    ext, uri, log, start, n, go_on = sys.argv[1:7]
    l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(ext)
    c = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
    try:
        c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
    except sqlite3.Error as e:
        if getattr(e, "sqlite_errorcode", None) != 6922:
            raise
    with open(log, "a") as out:
        for i in range(int(start), int(start) + int(n)):
            try:
                c.execute("INSERT INTO t VALUES (?, randomblob(1500))", (i,))
                outcome = "ok"
            except sqlite3.Error as e:
                code = getattr(e, "sqlite_errorcode", None)
                outcome = "notrep" if code == 6922 else f"err:{code}:{e}".replace(" ", "_")
            out.write(f"{i} {outcome}\\n"); out.flush()
        if go_on == "-":
            sys.exit(0)
        while not os.path.exists(go_on):
            time.sleep(0.05)
        deadline = time.time() + 90
        while json.loads(c.execute("PRAGMA litestream_stats").fetchone()[0])["pending"]:
            if time.time() > deadline:
                sys.exit("still pending after 90 s: "
                         + c.execute("PRAGMA litestream_stats").fetchone()[0])
            time.sleep(0.05)
        out.write("shipped " + c.execute("PRAGMA litestream_stats").fetchone()[0] + "\\n")
    c.close()
""")


def start_writer(ext, uri, log: Path, start: int, n: int, go_on) -> subprocess.Popen:
    return subprocess.Popen(
        [child_python(), "-c", WRITER, str(ext), uri, str(log), str(start), str(n),
         str(go_on)],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outcomes(log: Path) -> dict:
    out = {}
    if log.exists():
        for line in log.read_text().splitlines():
            i, _, what = line.partition(" ")
            if i.isdigit():
                out[int(i)] = what
    return out


def ids_of(db: Path) -> set:
    c = sqlite3.connect(db)
    try:
        return {r[0] for r in c.execute("SELECT id FROM t")}
    finally:
        c.close()


def restored_ids(url: str, tmp_path: Path, name: str) -> set:
    out = tmp_path / name
    restore(url, out)
    c = sqlite3.connect(out)
    assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    c.close()
    return ids_of(out)


@pytest.fixture
def faulty_s3(s3_server, request):
    """A fresh bucket on moto, a fault proxy in front of it: (proxy, url through the proxy,
    url straight to moto)."""
    request.node._moto = s3_server
    bucket = s3_server.new_bucket()
    proxy = FaultProxy(s3_server.endpoint, seed=hash(request.node.name) & 0xffff).start()
    through = (f"s3://{bucket}/db?endpoint={proxy.endpoint}&force-path-style=true")
    direct = s3_server.replica_url(bucket, "db")
    yield proxy, through, direct
    proxy.stop()


def primary_uri(db: Path, url: str, **params) -> str:
    return vfs_uri(url, name=str(db), role="primary", **params)


ALL_FAULTS = [
    dict(kind="status", rate=0.15),
    dict(kind="reset", rate=0.05),
    dict(kind="drop", rate=0.08),
    dict(kind="truncate", rate=0.05),
    dict(kind="stall", rate=0.02, seconds=3),
]
ONE_FAULT = {
    "503": [dict(kind="status", rate=0.3)],
    "reset": [dict(kind="reset", rate=0.2)],
    "drop-after-apply": [dict(kind="drop", rate=0.2)],
    "truncate": [dict(kind="truncate", rate=0.3)],
    "stall": [dict(kind="stall", rate=0.1, seconds=2.5)],
    "all": ALL_FAULTS,
}


def check_promise(log: Path, db: Path, url: str, tmp_path: Path) -> dict:
    """The sync=remote rule, after healing: OK and not-replicated commits are in the
    replica, failed ones nowhere, and the replica equals the local database."""
    got = outcomes(log)
    ok = {i for i, w in got.items() if w == "ok"}
    notrep = {i for i, w in got.items() if w == "notrep"}
    failed = {i for i, w in got.items() if w.startswith("err")}
    local = ids_of(db)
    replica = restored_ids(url, tmp_path, "restored.db")
    assert ok <= replica, f"acknowledged but not in the replica: {sorted(ok - replica)}"
    assert notrep <= local, f"reported not replicated, yet not committed: {sorted(notrep - local)}"
    assert not (failed & (local | replica)), f"failed, yet committed: {sorted(failed & (local | replica))}"
    assert replica == local, (sorted(replica - local), sorted(local - replica))
    return {"ok": len(ok), "notrep": len(notrep), "failed": len(failed)}


@pytest.mark.parametrize("fault", list(ONE_FAULT))
def test_sync_remote_writer_under_faults(fault, faulty_s3, ext_path, tmp_path):
    proxy, through, direct = faulty_s3
    db, log, go_on = tmp_path / "app.db", tmp_path / "log", tmp_path / "go_on"
    for f in ONE_FAULT[fault]:
        proxy.add(**f)
    uri = primary_uri(db, through, sync="remote", sync_timeout="3s")
    w = start_writer(ext_path, uri, log, 1, 40, go_on)
    wait_until(lambda: len(outcomes(log)) == 40 or w.poll() is not None, 150, 0.05)
    proxy.heal()
    go_on.touch()
    out, err = w.communicate(timeout=120)
    assert w.returncode == 0, err[-3000:]
    counts = check_promise(log, db, direct, tmp_path)
    assert sum(proxy.injected.values()) > 0, "no fault was injected"
    assert counts["ok"] > 0, counts
    print(fault, counts, dict(proxy.injected))


def test_sync_remote_writer_killed_under_faults(faulty_s3, ext_path, tmp_path):
    """SIGKILL in the middle: what was acknowledged is in the replica already, before any
    process reopens the database; a reopen ships the rest."""
    proxy, through, direct = faulty_s3
    db, log = tmp_path / "app.db", tmp_path / "log"
    for f in ALL_FAULTS:
        proxy.add(**f)
    uri = primary_uri(db, through, sync="remote", sync_timeout="3s")
    w = start_writer(ext_path, uri, log, 1, 10_000, "-")
    wait_until(lambda: len(outcomes(log)) >= 25 or w.poll() is not None, 120, 0.02)
    w.send_signal(signal.SIGKILL)
    w.wait()
    proxy.heal()
    got = outcomes(log)
    ok = {i for i, wh in got.items() if wh == "ok"}
    assert len(ok) > 5, got
    replica = restored_ids(direct, tmp_path, "before-reopen.db")
    assert ok <= replica, f"acknowledged but not in the replica: {sorted(ok - replica)}"

    # A new process (the store healthy) ships whatever was committed locally.
    w = start_writer(ext_path, uri, log, 20_000, 3, tmp_path / "go")
    (tmp_path / "go").touch()
    out, err = w.communicate(timeout=120)
    assert w.returncode == 0, err[-3000:]
    check_promise(log, db, direct, tmp_path)


def test_sync_local_writer_under_faults_ships_a_prefix(faulty_s3, ext_path, tmp_path):
    """sync=local: commits never wait; the replica is always a prefix of the commits, and
    catches up once the store is healthy."""
    proxy, through, direct = faulty_s3
    db, log, go_on = tmp_path / "app.db", tmp_path / "log", tmp_path / "go_on"
    for f in ALL_FAULTS:
        proxy.add(**f)
    uri = primary_uri(db, through)
    w = start_writer(ext_path, uri, log, 1, 400, go_on)
    seen = []
    for k in range(4):
        time.sleep(0.7)
        ids = restored_ids(direct, tmp_path, f"during-{k}.db") if list_ltx(direct) else set()
        assert ids == set(range(1, len(ids) + 1)), f"not a prefix: {sorted(ids)[:20]}..."
        seen.append(len(ids))
    wait_until(lambda: len(outcomes(log)) == 400 or w.poll() is not None, 120, 0.05)
    assert all(w == "ok" for w in outcomes(log).values())
    proxy.heal()
    go_on.touch()
    out, err = w.communicate(timeout=120)
    assert w.returncode == 0, err[-3000:]
    assert restored_ids(direct, tmp_path, "after.db") == ids_of(db) == set(range(1, 401))
    print("prefix sizes while faulty:", seen, dict(proxy.injected))


def test_lost_answers_to_claims_do_not_stop_shipping(faulty_s3, ext_path, tmp_path):
    """A claim whose answer was lost after the store created it is found to be ours."""
    proxy, through, direct = faulty_s3
    proxy.add("drop", rate=0.5, method="PUT", path="/claims/")
    stats = twenty_acknowledged_commits(ext_path, through, direct, tmp_path)
    assert proxy.injected["drop"] > 0
    assert stats["retries"] + stats["storage"]["retries"] > 0, stats


def twenty_acknowledged_commits(ext_path, through: str, direct: str, tmp_path: Path) -> dict:
    """A sync=remote writer of twenty commits through the proxy: every commit acknowledged,
    shipping not stopped, and the replica (read straight from moto) equal to the local
    database. Returns the writer's stats once all shipped."""
    db, log, go_on = tmp_path / "app.db", tmp_path / "log", tmp_path / "go_on"
    uri = primary_uri(db, through, sync="remote", sync_timeout="10s")
    w = start_writer(ext_path, uri, log, 1, 20, go_on)
    wait_until(lambda: len(outcomes(log)) == 20 or w.poll() is not None, 120, 0.05)
    go_on.touch()
    out, err = w.communicate(timeout=120)
    assert w.returncode == 0, err[-3000:]
    assert all(wh == "ok" for wh in outcomes(log).values()), outcomes(log)
    stats = json.loads(open(log).read().split("shipped ", 1)[1].splitlines()[0])
    assert stats["stopped"] is None, stats
    assert restored_ids(direct, tmp_path, "r.db") == ids_of(db) == set(range(1, 21))
    return stats


READ_QUERIES = [
    "SELECT id, customer, amount, note, payload FROM orders ORDER BY id",
    "SELECT id, customer FROM orders WHERE customer BETWEEN 'cust0100' AND 'cust0300' "
    "ORDER BY customer, id",
]


def test_readers_under_faults_never_see_a_wrong_row(s3_server, tmp_path):
    """A replica written by the real Litestream, read through truncated bodies, resets, 503s
    and stalls: every query gives exactly the source's rows, or a clean SQLite error after
    bounded retries; never a wrong row, never a crash."""
    src = tmp_path / "src.db"
    w = create_source_db(src, rows=3000, overflow_rows=3)
    bucket = s3_server.new_bucket("faultyreads")
    ls = Litestream(src, s3_server.replica_url(bucket, "db"), workdir=tmp_path).start()
    try:
        ls.wait_synced()
        rnd = random.Random(12)
        with transaction(w):
            for _ in range(50):
                w.execute("UPDATE orders SET note = 'changed' WHERE id = ?", (rnd.randint(1, 3000),))
        ls.wait_synced()
    finally:
        ls.stop()
    expected = [rows_digest(w.execute(q).fetchall()) for q in READ_QUERIES]
    with FaultProxy(s3_server.endpoint, seed=5) as proxy:
        proxy.add("truncate", rate=0.2, method="GET")
        proxy.add("reset", rate=0.1)
        proxy.add("status", rate=0.15)
        proxy.add("stall", rate=0.03, seconds=2)
        url = f"s3://{bucket}/db?endpoint={proxy.endpoint}&force-path-style=true"
        uri = vfs_uri(url, cache_size="256KB", hedge_after="300ms", open_timeout="10s")
        seen = {"ok": 0, "error": 0}
        for _ in range(8):
            r = run_ext_child(uri, READ_QUERIES, timeout=120)
            assert r.returncode == 0, r.describe()
            assert r.elapsed < 90, r.describe()
            if r.error:
                assert r.error["type"] in ("OperationalError", "DatabaseError"), r.error
                seen["error"] += 1
                continue
            got = [rows_digest(rows) for rows in r.results[2:]]
            assert got == expected, "a wrong row under faults"
            seen["ok"] += 1
        assert seen["ok"] >= 1, seen
        assert proxy.injected["truncate"] > 0 and sum(proxy.injected.values()) > 10
        print(seen, dict(proxy.injected))


def test_a_full_primary_folder_fails_sync_remote_commits_and_loses_nothing(replica_url, tmp_path):
    """The primary's folder (mirrors, spool, state) on a small file system that fills up:
    a clear error in litestream_stats and a failed sync=remote COMMIT (committed locally),
    never a silent gap; once there is room again, everything ships."""
    small = tmp_path / "small"
    small.mkdir()
    m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)],
                       capture_output=True, text=True)
    if m.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({m.stderr.strip()}): "
                    "the full-folder case is not shown on this machine")
    try:
        filler = small / "filler"
        filler.write_bytes(b"\0" * (600 << 10))
        url = replica_url("file")
        db = tmp_path / "app.db"
        conn = connect(primary_uri(db, url, buffer_path=str(small / "meta"), sync="remote",
                                   sync_timeout="2s"))
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        failed = None
        for i in range(1, 40):
            try:
                conn.execute("INSERT INTO t VALUES (?, randomblob(60000))", (i,))
            except sqlite3.OperationalError as e:
                failed = (i, e.sqlite_errorcode)
                break
        assert failed is not None and failed[1] == NOT_REPLICATED, failed
        stats = json.loads(conn.execute("PRAGMA litestream_stats").fetchone()[0])
        assert "No space left" in (stats["last_error"] or ""), stats
        assert stats["pending"], stats
        # Committed locally all the same.
        assert conn.execute("SELECT max(id) FROM t").fetchone()[0] == failed[0]
        filler.unlink()
        wait_until(lambda: not json.loads(conn.execute("PRAGMA litestream_stats")
                                          .fetchone()[0])["pending"], 60)
        conn.close()
        assert restored_ids(url, tmp_path, "r.db") == ids_of(db) == set(range(1, failed[0] + 1))
    finally:
        subprocess.run(["umount", "-l", str(small)], capture_output=True)


def test_a_close_while_the_store_is_down_keeps_what_did_not_ship(faulty_s3, ext_path, tmp_path):
    """The last connection closes while every request fails: the WAL (and the mirrors) keep
    what did not ship, and the next open ships it once the store answers."""
    proxy, through, direct = faulty_s3
    db, log, go_on = tmp_path / "app.db", tmp_path / "log", tmp_path / "go_on"
    w = start_writer(ext_path, primary_uri(db, through), log, 1, 20, "-")
    w.communicate(timeout=120)
    assert w.returncode == 0
    proxy.add("status", rate=1.0)
    uri = primary_uri(db, through, shutdown_timeout="1s")
    w = start_writer(ext_path, uri, log, 100, 30, "-")
    out, err = w.communicate(timeout=120)
    assert w.returncode == 0, err[-3000:]
    assert "keeping the WAL" in err or "not yet shipped" in err, err[-3000:]
    assert max(restored_ids(direct, tmp_path, "while-down.db")) < 100
    proxy.heal()
    w = start_writer(ext_path, uri, log, 1000, 1, go_on)
    go_on.touch()
    out, err = w.communicate(timeout=120)
    assert w.returncode == 0, err[-3000:]
    assert restored_ids(direct, tmp_path, "healed.db") == ids_of(db) == set(range(1, 21)) | set(range(100, 130)) | {1000}


def test_a_store_that_ignores_create_only_writes_is_refused(faulty_s3, ext_path, tmp_path):
    """A proxy that drops If-None-Match makes every create-only write an overwrite: the
    single-writer claims would mean nothing. The primary refuses to start, naming the
    parameter that overrides the check, and ships nothing; with the override it ships."""
    proxy, through, direct = faulty_s3
    proxy.add("unconditional", method="PUT")
    db = tmp_path / "app.db"
    with pytest.raises(sqlite3.Error) as info:
        c = connect(primary_uri(db, through), ext=ext_path)
        c.execute("CREATE TABLE t(x)")
    e = info.value
    assert e.sqlite_errorname == "SQLITE_CANTOPEN", e
    assert "does not honour conditional writes" in str(e), e
    assert "check_conditional_writes=false" in str(e), e
    assert proxy.injected["unconditional"] >= 2
    assert list_ltx(direct) == []
    c = connect(primary_uri(tmp_path / "b.db", through, check_conditional_writes="false",
                            sync="remote"), ext=ext_path)
    c.execute("CREATE TABLE t(x)")
    c.execute("INSERT INTO t VALUES (1)")
    c.close()
    assert restored_ids_table(direct, tmp_path) == [(1,)]


def restored_ids_table(url: str, tmp_path: Path) -> list:
    out = tmp_path / "t.db"
    restore(url, out)
    return sqlite3.connect(out).execute("SELECT x FROM t").fetchall()


def test_a_conditional_request_conflict_is_retried(faulty_s3, ext_path, tmp_path):
    """S3 answers 409 ConditionalRequestConflict while another conditional write of the same
    name is in flight; nothing exists yet, and AWS advises to retry. A claim answered so is
    retried, not read as lost to another primary."""
    proxy, through, direct = faulty_s3
    proxy.add("status", status=409, code="ConditionalRequestConflict", method="PUT",
              path="/claims/", rate=0.5, count=6)
    stats = twenty_acknowledged_commits(ext_path, through, direct, tmp_path)
    assert proxy.injected["status"] > 0
    # Retried by the storage layer (a transient failure), not settled as a lost claim.
    assert stats["storage"]["retries"] > 0, stats
