#!/usr/bin/env python3
"""Soak test of the primary against a misbehaving object store (not run in CI).

For `--minutes` minutes: moto behind the fault proxy (`tests/py/fault_proxy.py`: 503
SlowDown, resets, answers lost after the store applied the request, truncated bodies,
stalls), `--writers` processes committing through the primary (half sync=remote, half
sync=local), the sqlite3 shell writing beside them without the extension now and then, the
shipping process killed with SIGKILL every `--kill-every` seconds, and the faults switched off
for a few seconds every so often. Every `--check-every` seconds, and at the end with the store
healthy, the invariants are checked against the real `litestream restore` of the replica:

  - every COMMIT that returned OK is in the replica;
  - the replica's rows are rows some process committed (never a rolled-back one);
  - at the end, once everything has shipped: the replica equals the local database.

Report (stdout, and `--out` as JSON): commits acknowledged / not confirmed (SQLITE_IOERR_VNODE)
/ failed, faults injected by kind, SIGKILLs, checks passed and failed.

Run: /usr/bin/python3 tests/soak/soak_primary.py [--minutes 10] [--writers 4] [--out FILE]
(after `bash tests/setup.sh`, with the same environment tests/run.sh sets, or from the
repository root where its defaults find the venv and the release build).
"""
import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "py"))
os.environ.setdefault("LITESTREAM_TEST_VENV", str(ROOT / "tests" / ".work" / "venv"))
from harness.common import child_env  # noqa: E402
from harness.litestream import restore  # noqa: E402
from harness.s3 import S3Server  # noqa: E402
from harness.sqlite_hosts import child_python, ext_path, run_sqlite_child, vfs_uri  # noqa: E402
from fault_proxy import FaultProxy  # noqa: E402

WRITER = r"""
import sqlite3, sys, time
ext, uri, who, log = sys.argv[1:5]
l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(ext)
c = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
modes = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"]
with open(log, "a") as out:
    i = 0
    while True:
        i += 1
        key = f"{who}-{time.time_ns()}"
        try:
            c.execute("INSERT INTO t(k, v) VALUES (?, randomblob(abs(random()) % 3000))", (key,))
            what = "ok"
        except sqlite3.Error as e:
            code = getattr(e, "sqlite_errorcode", None)
            what = "notrep" if code == 6922 else f"err{code}"
        out.write(f"{key} {what}\n"); out.flush()
        if i % 97 == 0:
            c.execute(f"PRAGMA wal_checkpoint({modes[i // 97 % 4]})").fetchall()
        time.sleep(0.002)
"""


def outcomes(logs) -> dict:
    out = {}
    for log in logs:
        if log.exists():
            for line in log.read_text().splitlines():
                key, _, what = line.partition(" ")
                if what:
                    out[key] = what
    return out


def keys(db: Path) -> set:
    c = sqlite3.connect(db)
    try:
        return {r[0] for r in c.execute("SELECT k FROM t")}
    finally:
        c.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--kill-every", type=float, default=20)
    ap.add_argument("--check-every", type=float, default=30)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    ext = str(ext_path())
    work = Path(tempfile.mkdtemp(prefix="soak-primary-"))
    s3 = S3Server(work / "moto").start()
    proxy = FaultProxy(s3.endpoint, seed=a.seed).start()
    bucket = s3.new_bucket("soak")
    through = f"s3://{bucket}/db?endpoint={proxy.endpoint}&force-path-style=true"
    direct = s3.replica_url(bucket, "db")
    db = work / "app.db"
    c = sqlite3.connect(db)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT UNIQUE, v BLOB)")
    c.commit()
    c.close()

    def faulty():
        proxy.add("status", rate=0.10)
        proxy.add("reset", rate=0.03)
        proxy.add("drop", rate=0.05)
        proxy.add("truncate", rate=0.03)
        proxy.add("stall", rate=0.01, seconds=3)

    logs, procs = [], {}

    def spawn(i):
        sync = "remote" if i % 2 == 0 else "local"
        uri = vfs_uri(through, name=str(db), role="primary", sync=sync, sync_timeout="5s")
        log = work / f"w{i}.log"
        if log not in logs:
            logs.append(log)
        procs[i] = subprocess.Popen([child_python(), "-c", WRITER, ext, uri, f"w{i}",
                                     str(log)], env=child_env(),
                                    stdout=subprocess.DEVNULL, stderr=open(work / f"w{i}.err", "a"))

    report = {"kills": 0, "checks": 0, "check_failures": [], "shell_commits": 0}
    faulty()
    for i in range(a.writers):
        spawn(i)
    meta = Path(str(db) + "-litestream")
    end = time.monotonic() + a.minutes * 60
    next_kill = time.monotonic() + a.kill_every
    next_check = time.monotonic() + a.check_every
    next_heal = time.monotonic() + 40
    while time.monotonic() < end:
        time.sleep(0.5)
        if rnd.random() < 0.05:
            # A writer without the extension.
            script = ".timeout 60000\n" + "".join(
                f"INSERT INTO t(k, v) VALUES ('shell-{time.time_ns()}-{j}', randomblob(100));\n"
                for j in range(20)) + "PRAGMA wal_checkpoint(TRUNCATE);\n"
            r = subprocess.run(["sqlite3", str(db)], input=script, capture_output=True, text=True)
            if r.returncode == 0:
                report["shell_commits"] += 20
        if time.monotonic() > next_heal:
            proxy.heal()
            time.sleep(5)
            faulty()
            next_heal = time.monotonic() + 40
        if time.monotonic() > next_kill:
            raw = (meta / "progress").read_bytes() if (meta / "progress").exists() else b""
            try:
                pid = json.loads(raw[20:20 + int.from_bytes(raw[4:8], "big")])["pid"]
            except (ValueError, KeyError):
                pid = None
            for i, p in list(procs.items()):
                if p.pid == pid:
                    p.send_signal(signal.SIGKILL)
                    p.wait()
                    report["kills"] += 1
                    spawn(i)
            next_kill = time.monotonic() + a.kill_every
        if time.monotonic() > next_check:
            got = outcomes(logs)
            out = work / f"check-{report['checks']}.db"
            try:
                restore(direct, out)
                replica = keys(out)
                missing = [k for k, w in got.items() if w == "ok" and k not in replica
                           and k in outcomes(logs)]
                # A commit acknowledged after the restore listed the replica may be missing.
                missing = [k for k in missing if int(k.rsplit("-", 1)[1]) < (time.time_ns() - 30e9)]
                if missing:
                    report["check_failures"].append(f"acknowledged, not in the replica: {missing[:5]}")
                report["checks"] += 1
            except Exception as e:  # noqa: BLE001 - reported, the soak goes on
                report["check_failures"].append(f"restore failed: {e}")
            next_check = time.monotonic() + a.check_every
    # The end: store healthy, writers stopped, one process ships what is left.
    proxy.heal()
    for p in procs.values():
        p.send_signal(signal.SIGKILL)
        p.wait()
    uri = vfs_uri(through, name=str(db), role="primary")
    r = run_sqlite_child([{"op": "load", "path": ext}, {"op": "open", "name": "db", "uri": uri},
                          {"op": "query", "conn": "db", "sql": "SELECT count(*) FROM t"}]
                         + [{"op": "sleep", "seconds": 1}] * 20, timeout=300)
    got = outcomes(logs)
    final = work / "final.db"
    restore(direct, final)
    replica, local = keys(final), keys(db)
    acked = {k for k, w in got.items() if w == "ok"}
    failed = {k for k, w in got.items() if w.startswith("err")}
    if not acked <= replica:
        report["check_failures"].append(f"final: acknowledged not in the replica: {sorted(acked - replica)[:5]}")
    if failed & (replica | local):
        report["check_failures"].append(f"final: failed commits present: {sorted(failed & (replica | local))[:5]}")
    if replica != local:
        report["check_failures"].append(
            f"final: replica != local ({len(replica - local)} extra, {len(local - replica)} missing)")
    report.update({
        "minutes": a.minutes,
        "writers": a.writers,
        "acknowledged": len(acked),
        "not_confirmed": sum(1 for w in got.values() if w == "notrep"),
        "failed": len(failed),
        "rows": len(local),
        "faults": dict(proxy.injected),
        "flush_child_ok": r.error is None,
        "passed": not report["check_failures"],
    })
    proxy.stop()
    s3.stop()
    text = json.dumps(report, indent=2)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
