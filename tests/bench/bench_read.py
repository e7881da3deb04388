#!/usr/bin/env python3
"""Read benchmark: our VFS against native SQLite and the Go extension, on one replica.

Builds a source database, replicates it with the real Litestream to a file:// replica, stops
Litestream, then times three workloads in fresh child processes (so "cold" means: this
process has never read the replica; the OS page cache is warm for everyone alike):

  point  1,000 random primary-key lookups
  scan   a full table scan (count and sum over every row)
  range  an index range scan that also reads the rows

For each reader: cold = the first run after open, warm = the median of the next runs in the
same connection. Results are ratios from one run, so the machine's noise cancels out:
ours/native (target: warm <= 1.2x) and go/ours (target: cold >= 3x).

With --encrypted, every object of the replica is also encrypted with the reference `age`
tool into a second file:// replica, which our VFS reads with the identity (rows "ours, age").

Run: /usr/bin/python3 tests/bench/bench_read.py [--rows N] [--encrypted] [--out FILE]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "py"))
from harness.common import REPO_ROOT, child_env  # noqa: E402
from harness.data import create_source_db  # noqa: E402
from harness.litestream import Litestream  # noqa: E402
from harness.sqlite_hosts import child_python, ext_path, go_vfs_path, vfs_uri  # noqa: E402

WORKLOADS = {
    "point": "point",
    "scan": "scan",
    "range": "range",
}

CHILD = r"""
import json, random, sqlite3, statistics, sys, time
mode, uri, ext, workload, rows, runs = sys.argv[1:7]
rows, runs = int(rows), int(runs)
if ext:
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(ext)
t_open = time.perf_counter()
conn = sqlite3.connect(uri, uri=True)
def run():
    rnd = random.Random(42)
    if workload == "point":
        n = 0
        for _ in range(1000):
            n += len(conn.execute("SELECT * FROM orders WHERE id = ?", (rnd.randint(1, rows),)).fetchall())
        return n
    if workload == "scan":
        return conn.execute("SELECT count(*), sum(length(note)) FROM orders").fetchone()[0]
    if workload == "range":
        return len(conn.execute("SELECT * FROM orders WHERE customer BETWEEN 'cust0100' AND 'cust0180'").fetchall())
    if workload in ("restore", "vacuum_into"):
        import os, tempfile
        out = os.path.join(tempfile.mkdtemp(), "copy.db")
        if workload == "restore":
            conn.execute("SELECT litestream_restore(?)", (out,)).fetchone()
        else:
            conn.execute("VACUUM INTO ?", (out,))
        return sqlite3.connect(out).execute("SELECT count(*) FROM orders").fetchone()[0]
times = []
result = None
for i in range(runs):
    t = time.perf_counter()
    r = run()
    times.append(time.perf_counter() - t)
    if result is None:
        result = r
    assert r == result, (r, result)
print(json.dumps({"cold": times[0], "warm": statistics.median(times[1:]), "result": result}))
"""


def measure(mode, uri, ext, workload, rows, runs, env):
    out = subprocess.run([child_python(), "-c", CHILD, mode, uri, str(ext), workload,
                          str(rows), str(runs)], capture_output=True, text=True, env=env,
                         timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{mode}/{workload} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--out", default=str(REPO_ROOT / "tests/.work/bench/read.md"))
    ap.add_argument("--encrypted", action="store_true",
                    help="also read an age-encrypted copy of the replica")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-", dir=REPO_ROOT / "tests/.work"))
    src = work / "src.db"
    w = create_source_db(src, rows=args.rows, overflow_rows=0)
    w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size_mb = src.stat().st_size / 1e6
    replica = f"file://{work}/replica"
    ls = Litestream(src, replica, workdir=work).start()
    ls.wait_synced(timeout=300)
    ls.stop()

    env = child_env()
    go_env = child_env({"LITESTREAM_REPLICA_URL": replica})
    readers = {
        "native": (f"file:{src}?mode=ro", "", env),
        "ours": (vfs_uri(replica, name="bench.db"), ext_path(), env),
        "go": ("file:bench.db?vfs=litestream", go_vfs_path(), go_env),
    }
    if args.encrypted:
        key = work / "age-key.txt"
        subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
        recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True,
                                   capture_output=True, text=True).stdout.strip()
        for f in (work / "replica").rglob("*.ltx"):
            out = work / "replica-age" / f.relative_to(work / "replica")
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["age", "-r", recipient, "-o", str(out), str(f)], check=True)
        readers["ours-age"] = (vfs_uri(f"file://{work}/replica-age", name="bench-age.db"),
                               ext_path(),
                               child_env({"LITESTREAM_AGE_IDENTITY": key.read_text()}))
    results = {}
    for workload in WORKLOADS:
        for mode, (uri, ext, e) in readers.items():
            r = measure(mode, uri, ext, workload, args.rows, args.runs, e)
            results[(workload, mode)] = r
            print(f"{workload:6} {mode:7} cold {r['cold']*1000:9.1f} ms  warm {r['warm']*1000:9.1f} ms", flush=True)
        vals = {results[(workload, m)]["result"] for m in readers}
        assert len(vals) == 1, f"{workload}: readers disagree: {vals}"

    copies = {w: measure("ours", readers["ours"][0], readers["ours"][1], w, args.rows, 2, env)
              for w in ("restore", "vacuum_into")}
    assert copies["restore"]["result"] == copies["vacuum_into"]["result"] == args.rows

    lines = [
        f"Read benchmark: {args.rows:,} rows, {size_mb:.0f} MB database, file:// replica written by "
        f"Litestream 0.5.17; one run, child process per reader (`tests/bench/bench_read.py`).",
        "",
        "| workload | native cold | native warm | ours cold | ours warm | Go cold | Go warm "
        "| ours/native warm | Go/ours cold |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for workload in WORKLOADS:
        n, o, g = (results[(workload, m)] for m in ("native", "ours", "go"))
        ms = lambda s: f"{s*1000:.1f} ms"  # noqa: E731
        lines.append(
            f"| {workload} | {ms(n['cold'])} | {ms(n['warm'])} | {ms(o['cold'])} | {ms(o['warm'])} "
            f"| {ms(g['cold'])} | {ms(g['warm'])} | {o['warm']/n['warm']:.2f}x | {g['cold']/o['cold']:.1f}x |")
    if args.encrypted:
        lines += ["", "The same replica, every object age-encrypted (`--encrypted`):", "",
                  "| workload | ours cold | ours warm | ours, age cold | ours, age warm "
                  "| age/plaintext cold | age/plaintext warm |", "|---|---|---|---|---|---|---|"]
        for workload in WORKLOADS:
            o, a = results[(workload, "ours")], results[(workload, "ours-age")]
            ms = lambda s: f"{s*1000:.1f} ms"  # noqa: E731
            lines.append(f"| {workload} | {ms(o['cold'])} | {ms(o['warm'])} | {ms(a['cold'])} "
                         f"| {ms(a['warm'])} | {a['cold']/o['cold']:.2f}x | {a['warm']/o['warm']:.2f}x |")
    r, v = copies["restore"], copies["vacuum_into"]
    lines += [
        "",
        "Copying the replica to a local file through our VFS (cold, fresh process): "
        f"`litestream_restore` {r['cold']*1000:.0f} ms, `VACUUM INTO` {v['cold']*1000:.0f} ms "
        f"({v['cold']/r['cold']:.1f}x).",
    ]
    report = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    print()
    print(report)


if __name__ == "__main__":
    main()
