"""Every process of an application writes the primary: Python workers and a Ruby
process through the extension, the sqlite3 shell without it, checkpoints of every mode from
all of them. One process ships at a time; when it is killed another takes over. Oracles: the
real `litestream restore`, the Go extension and our read replica, against the local
database."""

import json
import os
import signal
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
from harness.ltx import replica_max_txid
from harness.sqlite_hosts import child_python, go_vfs, run_ext_child, vfs_uri

# A worker through the extension: `n` transactions of a few rows each into `dbs` (one
# after the other), a checkpoint of another mode every `every` transactions; each
# acknowledged transaction logged as "<db index> <first id> <last id>" after COMMIT.
PY_WORKER = textwrap.dedent("""
    import random, sqlite3, sys, time
    ext, wid, n, every, log = sys.argv[1:6]
    uris = sys.argv[6:]
    l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(ext)
    conns = [sqlite3.connect(u, uri=True, isolation_level=None, timeout=60) for u in uris]
    modes = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"]
    rnd = random.Random(wid)
    with open(log, "a") as out:
        for i in range(int(n)):
            k = i % len(conns)
            c = conns[k]
            try:
                c.execute("BEGIN IMMEDIATE")
                first = c.execute("SELECT coalesce(max(id), 0) + 1 FROM t").fetchone()[0]
                for j in range(rnd.randint(1, 4)):
                    c.execute("INSERT INTO t(id, who, v) VALUES (?, ?, randomblob(?))",
                              (first + j, wid, rnd.randint(10, 3000)))
                c.execute("COMMIT")
                out.write(f"{k} {first} {first + j}\\n"); out.flush()
            except sqlite3.Error as e:
                out.write(f"{k} error {getattr(e, 'sqlite_errorcode', None)} {e}\\n"); out.flush()
                if c.in_transaction:
                    c.execute("ROLLBACK")
            if i % int(every) == int(every) - 1:
                c.execute(f"PRAGMA wal_checkpoint({modes[(i // int(every)) % 4]})").fetchall()
    for c in conns:
        c.close()
""")

RUBY_WORKER = textwrap.dedent("""
    require "sqlite3"
    ext, who, n, uri = ARGV
    loader = SQLite3::Database.new(":memory:")
    loader.enable_load_extension(true)
    loader.load_extension(ext)
    open = SQLite3::Constants::Open
    db = SQLite3::Database.new(uri, flags: open::READWRITE | open::CREATE | open::URI)
    db.busy_timeout = 60000
    n.to_i.times do |i|
      db.transaction(:immediate) do
        first = db.get_first_value("SELECT coalesce(max(id), 0) + 1 FROM t")
        db.execute("INSERT INTO t(id, who, v) VALUES (?, ?, randomblob(100))", [first, who])
      end
      db.execute("PRAGMA wal_checkpoint(TRUNCATE)") if i % 40 == 39
    end
    db.close
""")


def shell_script(n: int, who: str) -> str:
    """SQL for the sqlite3 shell, a writer without the extension."""
    lines = [".timeout 60000"]
    for i in range(n):
        lines.append(f"INSERT INTO t(id, who, v) SELECT coalesce(max(id), 0) + 1, '{who}', "
                     f"randomblob(200) FROM t;")
        if i % 30 == 29:
            lines.append(f"PRAGMA wal_checkpoint({['PASSIVE', 'TRUNCATE', 'RESTART'][i // 30 % 3]});")
    return "\n".join(lines) + "\n"


def create_db(path: Path) -> None:
    c = sqlite3.connect(path)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT, v BLOB)")
    c.commit()
    c.close()


def primary_uri(db: Path, url: str, **params) -> str:
    return vfs_uri(url, name=str(db), role="primary", **params)


def py_worker(ext, wid, n, every, log, uris, **kw):
    return subprocess.Popen([child_python(), "-c", PY_WORKER, str(ext), wid, str(n),
                             str(every), str(log), *uris],
                            env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def wait_shipped_in_child(ext, uri, timeout=90) -> dict:
    script = textwrap.dedent("""
        import json, sqlite3, sys, time
        ext, uri, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
        l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(ext)
        c = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
        deadline = time.time() + timeout
        while True:
            s = json.loads(c.execute("PRAGMA litestream_stats").fetchone()[0])
            if s["leader"] and not s["pending"]:
                break
            if time.time() > deadline:
                sys.exit("still pending: " + json.dumps(s))
            time.sleep(0.05)
        print(json.dumps(s))
        c.close()
    """)
    p = subprocess.run([child_python(), "-c", script, str(ext), uri, str(timeout)],
                       env=child_env(), capture_output=True, text=True, timeout=timeout + 60)
    assert p.returncode == 0, p.stderr[-3000:] + p.stdout[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def local_digest(db: Path) -> dict:
    c = sqlite3.connect(db)
    try:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return all_tables_digest(c)
    finally:
        c.close()


def restored_digest(url: str, out: Path) -> dict:
    restore(url, out)
    return local_digest(out)


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_every_process_writes_and_every_commit_is_replicated(backend, replica_url, ext_path,
                                                             tmp_path):
    url = replica_url(backend)
    db = tmp_path / "app.db"
    create_db(db)
    uri = primary_uri(db, url)
    logs = [tmp_path / f"w{i}.log" for i in range(4)]
    procs = [py_worker(ext_path, f"py{i}", 250, 25, logs[i], [uri]) for i in range(4)]
    rb = tmp_path / "worker.rb"
    rb.write_text(RUBY_WORKER)
    procs.append(subprocess.Popen(["ruby", str(rb), str(ext_path), "ruby", "150", uri],
                                  env=child_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
    shell = subprocess.Popen(["sqlite3", str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    out, err = shell.communicate(shell_script(200, "shell"), timeout=300)
    assert shell.returncode == 0, err
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    for log in logs:
        assert "error" not in log.read_text(), log.read_text()[-2000:]
    # Whatever the shell committed after the last process of ours closed ships at the next
    # open; the replica then equals the local database.
    stats = wait_shipped_in_child(ext_path, uri)
    assert stats["last_error"] is None and stats["stopped"] is None, stats
    local = local_digest(db)
    c = sqlite3.connect(db)
    counts = dict(c.execute("SELECT who, count(*) FROM t GROUP BY who").fetchall())
    c.close()
    assert counts["shell"] == 200 and counts["ruby"] == 150, counts
    assert restored_digest(url, tmp_path / "restored.db") == local
    # Our read replica and Litestream's Go extension read the same.
    ours = run_ext_child(vfs_uri(url), ["SELECT count(*), sum(length(v)), "
                                        "group_concat(who) FROM t"])
    assert ours.error is None, ours.describe()
    expected = sqlite3.connect(db).execute(
        "SELECT count(*), sum(length(v)), group_concat(who) FROM t").fetchall()
    assert ours.results[2] == [list(r) for r in expected]
    go = go_vfs(url, ["SELECT count(*), sum(length(v)), group_concat(who) FROM t"])
    assert go[0] == [list(r) for r in expected]


def acknowledged(log: Path) -> list:
    out = []
    if log.exists():
        for line in log.read_text().splitlines():
            k, first, last = line.split()[:3]
            if first != "error":
                out.append((int(k), int(first), int(last)))
    return out


def test_the_shipping_process_killed_another_takes_over(replica_url, ext_path, tmp_path):
    """SIGKILL of the leader mid-workload, sync=remote in every process: another process
    takes over within a bound, every acknowledged commit is in the replica before anything
    reopens, and the next processes go on with the next TXIDs."""
    url = replica_url("s3")
    db = tmp_path / "app.db"
    create_db(db)
    uri = primary_uri(db, url, sync="remote", sync_timeout="20s")
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    procs = [py_worker(ext_path, f"py{i}", 100_000, 37, logs[i], [uri]) for i in range(3)]
    meta = Path(str(db) + "-litestream")
    progress = lambda: harness_progress(meta)
    wait_until(lambda: progress() and progress()["pid"] in [p.pid for p in procs], 60)
    wait_until(lambda: all(len(acknowledged(lg)) > 20 for lg in logs), 60)
    leader = progress()["pid"]
    victim = next(p for p in procs if p.pid == leader)
    victim.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait()
    wait_until(lambda: progress()["pid"] not in (leader, 0), 30, 0.01,
               message="another process to take over")
    takeover = time.monotonic() - killed_at
    survivors = [p for p in procs if p is not victim]
    counts = [len(acknowledged(lg)) for lg in logs]
    wait_until(lambda: sum(len(acknowledged(lg)) for lg in logs) > sum(counts) + 30, 60,
               message="commits to go on after the takeover")
    for p in survivors:
        p.send_signal(signal.SIGKILL)
        p.wait()
    # Before anything reopens: every acknowledged transaction is in the replica.
    out = tmp_path / "restored.db"
    restore(url, out)
    r = sqlite3.connect(out)
    ids = {row[0] for row in r.execute("SELECT id FROM t")}
    r.close()
    for lg in logs:
        for _, first, last in acknowledged(lg):
            missing = set(range(first, last + 1)) - ids
            assert not missing, f"{lg.name}: acknowledged ids {sorted(missing)} not in the replica"
    # Reopening goes on from there, and the replica ends equal to the local database.
    before = replica_max_txid(url)
    stats = wait_shipped_in_child(ext_path, uri)
    assert int(stats["shipped_txid"], 16) >= before
    assert restored_digest(url, tmp_path / "final.db") == local_digest(db)
    print(f"takeover after SIGKILL: {takeover:.2f} s")
    assert takeover < 5, takeover


def harness_progress(meta: Path):
    """The leader's published progress (pid, shipped TXID, ...), read as followers read it."""
    p = meta / "progress"
    if not p.exists():
        return None
    raw = p.read_bytes()
    if len(raw) < 20 or raw[:4] != b"LSPR":
        return None
    n = int.from_bytes(raw[4:8], "big")
    try:
        return json.loads(raw[20:20 + n])
    except ValueError:
        return None


def test_two_databases_written_by_the_same_processes(replica_url, ext_path, tmp_path):
    dbs = [tmp_path / "a.db", tmp_path / "b.db"]
    urls = [replica_url("file", "ra"), replica_url("file", "rb")]
    for d in dbs:
        create_db(d)
    uris = [primary_uri(d, u) for d, u in zip(dbs, urls)]
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    procs = [py_worker(ext_path, f"py{i}", 200, 30, logs[i], uris) for i in range(3)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    for d, u, name in zip(dbs, urls, ["ra", "rb"]):
        wait_shipped_in_child(ext_path, primary_uri(d, u))
        assert restored_digest(u, tmp_path / f"{name}.db") == local_digest(d)


def test_processes_must_agree_on_the_replica(replica_url, ext_path, tmp_path):
    db = tmp_path / "app.db"
    create_db(db)
    first = subprocess.Popen([child_python(), "-c", PY_WORKER, str(ext_path), "a",
                              "100000", "1000", str(tmp_path / "a.log"),
                              primary_uri(db, replica_url("file", "one"))],
                             env=child_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: len(acknowledged(tmp_path / "a.log")) > 5, 60)
        r = run_ext_child(primary_uri(db, replica_url("file", "two")), ["SELECT 1"])
        assert r.error and "replica_url" in r.error["message"], r.describe()
        r = run_ext_child(primary_uri(db, replica_url("file", "one"), checksum="on"),
                          ["SELECT 1"])
        assert r.error and "checksum" in r.error["message"], r.describe()
    finally:
        first.kill()
        first.wait()


def test_a_primary_opened_while_another_process_holds_the_database_waits_for_it(
        replica_url, ext_path, tmp_path):
    """A connection opened as a primary puts the database in WAL mode before the host can
    set a busy timeout: while another process holds the database's lock, that waits (up to
    `open_timeout`) instead of failing the open at once with SQLITE_BUSY."""
    db = tmp_path / "app.db"
    create_db(db)
    url = replica_url("file")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO t(id, who) VALUES (1, 'holder')")
    holder.execute("COMMIT")
    try:
        r = run_ext_child(primary_uri(db, url, open_timeout="300ms"), ["SELECT 1"])
        assert r.error and r.error["message"].startswith("litestream: "), r.describe()
        assert "database is locked" in r.error["message"], r.describe()
        assert r.error["code"] == sqlite3.SQLITE_BUSY, r.describe()

        done = {}
        child = threading.Thread(target=lambda: done.update(r=run_ext_child(
            primary_uri(db, url), ["SELECT count(*) FROM t"])))
        child.start()
        time.sleep(2)
    finally:
        released = time.time()
        holder.close()
    child.join(120)
    r = done["r"]
    assert not r.error, r.describe()
    assert r.results[-1] == [[1]]
    loaded, opened = r.times[0], r.times[1]
    assert loaded < released < opened, "the open waited for the lock"


# A writer that commits one row at a time, as fast as it can, `n` times.
FAST_WRITER = textwrap.dedent("""
    import sqlite3, sys
    ext, uri, who, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(ext)
    c = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
    for i in range(n):
        c.execute("INSERT INTO t(who, v) VALUES (?, randomblob(200))", (who,))
    c.close()
""")


def test_busy_writers_restart_the_wal_without_losing_track_of_it(replica_url, ext_path,
                                                                  tmp_path):
    """Four processes commit single rows as fast as they can: the WAL restarts dozens of
    times a second, mostly in processes that do not lead, which wait for the leader to copy
    what it has not copied yet and seal the generation. The leader follows every restart
    through the mirrors, so it never has to ship the whole database (the log's warning when
    it must), and the real restore equals the local database."""
    url = replica_url("file")
    db = tmp_path / "app.db"
    create_db(db)
    procs = [subprocess.Popen([child_python(), "-c", FAST_WRITER, str(ext_path),
                               primary_uri(db, url), f"w{i}", "4000"],
                              env=child_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    logs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        logs.append(err)
    wait_shipped_in_child(ext_path, primary_uri(db, url))
    whole = [line for err in logs for line in err.splitlines() if "whole database" in line]
    assert not whole, whole
    assert local_digest(db)["t"] == restored_digest(url, tmp_path / "restored.db")["t"]
    assert sqlite3.connect(db).execute("SELECT count(*) FROM t").fetchone()[0] == 16000


# A writer that commits when told: a line "n" on stdin commits n rows, one transaction
# each, and answers with the seconds it took; "restarts" answers with this process's WAL
# restarts from litestream_stats. A checkpoint every 20 pages: restarts often.
STEP_WRITER = textwrap.dedent("""
    import json, sqlite3, sys, time
    ext, uri = sys.argv[1], sys.argv[2]
    l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(ext)
    c = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
    c.execute("PRAGMA wal_autocheckpoint=20")
    c.execute("INSERT INTO t(who, v) VALUES ('open', randomblob(10))")
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "restarts":
            stats = json.loads(c.execute("PRAGMA litestream_stats").fetchone()[0])
            print(json.dumps(stats["restarts"]), flush=True)
            continue
        t = time.monotonic()
        for i in range(int(line)):
            c.execute("INSERT INTO t(who, v) VALUES ('step', randomblob(3000))")
        print(f"{time.monotonic() - t:.3f}", flush=True)
    c.close()
""")


def test_a_stopped_leader_does_not_slow_the_others_commits(replica_url, ext_path, tmp_path):
    """A leader that stops answering (SIGSTOP: a paused VM, a debugger, a process swapped
    out) copies nothing, so the other processes' WAL restarts are refused and the WAL grows.
    A restart waits for the leader's copy for a while, holding the write lock; once a wait
    went unanswered the next ones are refused at once for a second, rather than each commit
    waiting (100 commits took 24 s before), or until the leader's copy moves: once the
    leader goes on, restarts resume, everything ships and nothing was lost."""
    url = replica_url("file")
    db = tmp_path / "app.db"
    create_db(db)
    uri = primary_uri(db, url)
    meta = Path(str(db) + "-litestream")

    def start():
        p = subprocess.Popen([child_python(), "-c", STEP_WRITER, str(ext_path), uri],
                             env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        assert p.stdout.readline().startswith("ready"), p.stderr.read()[-3000:]
        return p

    def commit(p, n) -> float:
        p.stdin.write(f"{n}\n")
        p.stdin.flush()
        return float(p.stdout.readline())

    def restarts(p) -> dict:
        p.stdin.write("restarts\n")
        p.stdin.flush()
        return json.loads(p.stdout.readline())

    leader = start()
    wait_until(lambda: (harness_progress(meta) or {}).get("pid") == leader.pid, 30,
               message="the first process to lead")
    follower = start()
    try:
        commit(follower, 50)
        healthy = restarts(follower)
        assert healthy["allowed"] > 0, healthy
        leader.send_signal(signal.SIGSTOP)
        took = commit(follower, 100)
        stopped = restarts(follower)
        grown = os.path.getsize(str(db) + "-wal")
        leader.send_signal(signal.SIGCONT)
        print(f"100 commits with the leader stopped: {took:.2f} s, WAL {grown} bytes, "
              f"restarts {healthy} then {stopped}")
        # Restarts were refused (the WAL holds every page written meanwhile) ...
        assert stopped["refused"] > healthy["refused"], stopped
        assert grown > 100 * 3000, grown
        # ... and waited for the leader once a second at most, not at every commit (24 s
        # for the 100 before; 0.3 s here).
        unanswered = stopped["unanswered"] - healthy["unanswered"]
        assert 1 <= unanswered <= 2 + took, (unanswered, took)
        assert took < 12, took
        commit(follower, 50)
        assert restarts(follower)["allowed"] > stopped["allowed"], "restarts again"
    except BaseException:
        for p in (leader, follower):
            p.kill()
        raise
    finally:
        leader.send_signal(signal.SIGCONT)
    for p in (follower, leader):
        p.stdin.close()
        assert p.wait(timeout=120) == 0, p.stderr.read()[-3000:]
    wait_shipped_in_child(ext_path, uri)
    assert sqlite3.connect(db).execute("SELECT count(*) FROM t").fetchone()[0] == 202
    assert local_digest(db)["t"] == restored_digest(url, tmp_path / "restored.db")["t"]


# A writer without the extension: a row a transaction until `stop` exists, a checkpoint
# that restarts the WAL every five (RESTART and TRUNCATE in turn). It pauses a moment after
# each: SQLite's busy handler is not fair, and a writer that never lets go of the write
# lock starves the others.
PLAIN_WRITER = textwrap.dedent("""
    import os, sqlite3, sys, time
    db, stop = sys.argv[1], sys.argv[2]
    c = sqlite3.connect(db, isolation_level=None, timeout=60)
    i = 0
    while not os.path.exists(stop):
        c.execute("INSERT INTO t(who, v) VALUES ('plain', randomblob(300))")
        time.sleep(0.002)
        i += 1
        if i % 5 == 0:
            c.execute(f"PRAGMA wal_checkpoint({'TRUNCATE' if i % 10 else 'RESTART'})").fetchall()
    c.close()
    print(i)
""")


def test_a_leader_that_ships_the_whole_database_reads_one_state_of_it(replica_url, ext_path,
                                                                       tmp_path):
    """A process that becomes the leader after writers without the extension restarted the
    WAL under nobody's watch finds that the mirrors cannot say what changed: it ships the
    whole database. While it reads it, such a writer goes on committing and checkpointing
    (RESTART, TRUNCATE) every few milliseconds. The leader holds checkpoints off while it
    reads, so its open succeeds, and the real restore equals the local database: no page
    was read from a state other than the one shipped."""
    url = replica_url("file")
    db = tmp_path / "app.db"
    create_db(db)
    c = sqlite3.connect(db)
    # Large enough that reading it takes a while: 4,000 pages.
    c.executemany("INSERT INTO t(who, v) VALUES ('seed', randomblob(3000))",
                  [()] * 4000)
    c.commit()
    c.close()
    uri = primary_uri(db, url)
    wait_shipped_in_child(ext_path, uri)
    stop = tmp_path / "stop"
    writer = subprocess.Popen([child_python(), "-c", PLAIN_WRITER, str(db), str(stop)],
                              env=child_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    script = textwrap.dedent("""
        import json, sqlite3, sys, time
        ext, uri = sys.argv[1], sys.argv[2]
        l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(ext)
        c = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
        c.execute("INSERT INTO t(who, v) VALUES ('leader', randomblob(100))")
        while True:
            s = json.loads(c.execute("PRAGMA litestream_stats").fetchone()[0])
            if s["leader"] and not s["pending"]:
                break
            time.sleep(0.02)
        c.close()
    """)
    wholes = 0
    try:
        for round in range(4):
            # Nobody leads meanwhile: the writer restarts the WAL freely.
            time.sleep(0.3)
            t = time.monotonic()
            p = subprocess.run([child_python(), "-c", script, str(ext_path), uri],
                               env=child_env(), capture_output=True, text=True, timeout=120)
            print(f"round {round}: {time.monotonic() - t:.2f} s")
            assert p.returncode == 0, f"round {round}: {p.stderr[-3000:]}"
            wholes += "shipping the whole database" in p.stderr
    finally:
        stop.touch()
        out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err[-3000:]
    print(f"{wholes} of 4 leaders shipped the whole database; the writer committed {out.strip()}")
    # The scenario happened: leaders had to read the whole database beside the writer.
    assert wholes >= 2, wholes
    wait_shipped_in_child(ext_path, uri)
    assert restored_digest(url, tmp_path / "restored.db") == local_digest(db)
