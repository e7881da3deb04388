#!/usr/bin/env python3
"""A busy primary beside many idle ones in one process: its `sync=remote` commit rate and
latency with 0 and with N idle primaries (each its own database and file:// replica), so that
idle databases are shown not to slow the busy one down (issue "Thousands of databases").

Run: /usr/bin/python3 tests/bench/bench_busy_among_idle.py [--idle 999] [--commits 300]
Each measurement is a fresh child process; compare the two lines of one run.
"""

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "py"))
from harness.sqlite_hosts import child_python, ext_path  # noqa: E402

CHILD = r"""
import resource, sqlite3, statistics, sys, tempfile, time
ext, n_idle, commits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
c = sqlite3.connect(":memory:"); c.enable_load_extension(True); c.load_extension(ext)
d = tempfile.mkdtemp()
idle = []
for i in range(n_idle):
    db = sqlite3.connect(f"file:{d}/p{i}.db?vfs=litestream&role=primary&replica_url=file://{d}/r{i}",
                         uri=True, isolation_level=None)
    db.execute("CREATE TABLE t(x)"); db.execute("INSERT INTO t VALUES (1)")
    idle.append(db)
time.sleep(5)
busy = sqlite3.connect(f"file:{d}/busy.db?vfs=litestream&role=primary&replica_url=file://{d}/rb&sync=remote",
                       uri=True, isolation_level=None)
busy.execute("CREATE TABLE t(x)")
lat = []
t0 = time.time()
for i in range(commits):
    a = time.perf_counter(); busy.execute("INSERT INTO t VALUES (?)", (i,)); lat.append(time.perf_counter() - a)
el = time.time() - t0
lat.sort()
print(f"| {n_idle} | {commits / el:.0f} | {statistics.median(lat) * 1000:.1f} ms | {lat[int(len(lat) * 0.99)] * 1000:.1f} ms |")
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=int, default=999)
    ap.add_argument("--commits", type=int, default=300)
    a = ap.parse_args()
    ext = str(ext_path()).removesuffix(".so")
    print("| idle primaries beside it | sync=remote commits/s | p50 | p99 |")
    print("|---|---|---|---|")
    for n in (0, a.idle):
        out = subprocess.run([child_python(), "-c", CHILD, ext, str(n), str(a.commits)],
                             capture_output=True, text=True, timeout=600)
        print(out.stdout.strip() or out.stderr[-2000:])


if __name__ == "__main__":
    main()
