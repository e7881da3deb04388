#!/usr/bin/env python3
"""Write benchmark: commits through the primary (role=primary) against plain local WAL SQLite.

Each writer runs in a fresh child process and commits N small transactions (one row of
~200 bytes each), timing every COMMIT:

  native        plain SQLite, journal_mode=WAL, synchronous=NORMAL (the floor)
  primary       our VFS, role=primary, sync=local: COMMIT returns once the WAL has it
  native-full   plain SQLite with synchronous=FULL (what sync=remote runs on)
  remote-file   role=primary, sync=remote, file:// replica: COMMIT waits for the upload
  remote-s3     role=primary, sync=remote, moto S3 on 127.0.0.1
  (and sync=local against moto with sync_interval=100ms: moto shares the machine's cores)

Reported: commits per second and p50/p99 commit latency, and the ratio primary/native
(target for sync=local: within 10% of native throughput). The shared machines are noisy, so
the sync=local writers and native run interleaved for several rounds (native, file://, S3,
native, ...) and the report gives each one's median round and the ratio of the medians.

Run: /usr/bin/python3 tests/bench/bench_write.py [--commits N] [--rounds R] [--out FILE]
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "py"))
from harness.common import REPO_ROOT, child_env  # noqa: E402
from harness.s3 import S3Server  # noqa: E402
from harness.sqlite_hosts import child_python, ext_path, vfs_uri  # noqa: E402

CHILD = r"""
import json, sqlite3, sys, time
uri, ext, n, sync = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if ext:
    l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(ext)
c = sqlite3.connect(uri, uri=True, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.execute(f"PRAGMA synchronous={sync}")
c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
lat = []
t0 = time.perf_counter()
for i in range(n):
    s = time.perf_counter()
    c.execute("INSERT INTO t(v) VALUES (?)", ("x" * 200,))
    lat.append(time.perf_counter() - s)
total = time.perf_counter() - t0
shipped = None
if ext:
    t1 = time.perf_counter()
    c.close()   # the last connection flushes what is pending
    shipped = time.perf_counter() - t1
lat.sort()
print(json.dumps({"total": total, "p50": lat[len(lat)//2], "p99": lat[int(len(lat)*0.99)],
                  "close": shipped}))
"""


def run(uri: str, ext: str, n: int, sync: str) -> dict:
    p = subprocess.run([child_python(), "-c", CHILD, uri, ext, str(n), sync],
                       capture_output=True, text=True, env=child_env(), timeout=600)
    if p.returncode != 0:
        raise SystemExit(f"writer failed: {p.stderr}")
    return json.loads(p.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--commits", type=int, default=5000)
    ap.add_argument("--remote-commits", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(REPO_ROOT / "tests/.work/bench/write.md"))
    args = ap.parse_args()
    ext = str(ext_path())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-write-") as d:
        d = Path(d)
        s3 = S3Server(d / "moto").start()
        try:
            cases = [
                ("native", lambda i: (f"file:{d}/native-{i}.db", "", args.commits, "NORMAL")),
                ("primary (sync=local, file://)", lambda i: (vfs_uri(
                    (d / f"rep1-{i}").as_uri(), name=str(d / f"p1-{i}.db"), role="primary"),
                    ext, args.commits, "NORMAL")),
                ("primary (sync=local, S3)", lambda i: (vfs_uri(
                    s3.replica_url(s3.new_bucket(), f"p2-{i}"), name=str(d / f"p2-{i}.db"),
                    role="primary"), ext, args.commits, "NORMAL")),
                # The S3 server runs on the same two cores; uploads at most every 100 ms
                # show what its CPU costs the writer.
                ("primary (sync=local, S3, sync_interval=100ms)", lambda i: (vfs_uri(
                    s3.replica_url(s3.new_bucket(), f"p5-{i}"), name=str(d / f"p5-{i}.db"),
                    role="primary", sync_interval="100ms"), ext, args.commits, "NORMAL")),
                ("native (synchronous=FULL)", lambda i: (f"file:{d}/full.db", "",
                                                         args.remote_commits, "FULL")),
                ("primary (sync=remote, file://)", lambda i: (vfs_uri(
                    (d / "rep3").as_uri(), name=str(d / "p3.db"), role="primary",
                    sync="remote"), ext, args.remote_commits, "FULL")),
                ("primary (sync=remote, S3)", lambda i: (vfs_uri(
                    s3.replica_url(s3.new_bucket(), "p4"), name=str(d / "p4.db"),
                    role="primary", sync="remote"), ext, args.remote_commits, "FULL")),
            ]
            # Interleaved rounds of the sync=local writers and native; each round on fresh
            # files (a new database and replica), then the median round of each.
            local, remote = cases[:4], cases[4:]
            runs = {name: [] for name, _ in local}
            for i in range(args.rounds):
                for name, make in local:
                    uri, e, n, sync = make(i)
                    r = run(uri, e, n, sync)
                    r.update(name=name, n=n, rate=n / r["total"])
                    runs[name].append(r)
                    print(f"round {i + 1}", name, json.dumps(r), flush=True)
            for name, _ in local:
                rs = sorted(runs[name], key=lambda r: r["rate"])
                rows.append(rs[len(rs) // 2])
            for name, make in remote:
                uri, e, n, sync = make(0)
                r = run(uri, e, n, sync)
                r.update(name=name, n=n, rate=n / r["total"])
                rows.append(r)
                print(name, json.dumps(r), flush=True)
        finally:
            s3.stop()
    native = rows[0]["rate"]
    lines = [
        f"Write benchmark: single-row INSERT transactions, one child process per writer "
        f"(`tests/bench/bench_write.py`); {args.commits} commits (sync=local and native, "
        f"median of {args.rounds} interleaved rounds), {args.remote_commits} (sync=remote and "
        f"synchronous=FULL, one run).",
        "",
        "| writer | commits/s | p50 commit | p99 commit | vs native | close (flush) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        close = f"{r['close'] * 1000:.0f} ms" if r["close"] is not None else "—"
        lines.append(f"| {r['name']} | {r['rate']:.0f} | {r['p50'] * 1e6:.0f} µs | "
                     f"{r['p99'] * 1e6:.0f} µs | {r['rate'] / native:.2f}x | {close} |")
    report = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
