#!/usr/bin/env python3
"""S3 read benchmark: requests, bytes and wall time of our VFS and the Go extension on one
replica in an S3-compatible server (moto on 127.0.0.1) behind a proxy that delays every
request (default 20 ms, a same-region S3 round trip), plus native SQLite on the local file
as the floor.

The replica is written by the real Litestream straight to moto; readers go through the
proxy, which counts what they ask for. Every measurement is a fresh child process (cold):

  open   open to first row (`SELECT * FROM orders LIMIT 1`), with the round trips after the
         listing (waves of parallel requests)
  point  1,000 random primary-key lookups
  scan   a full table scan (count and sum over every row)
  range  an index range scan that also reads the rows

For point/scan/range the child first opens the database and reads the schema; only the
requests made during the workload count. Targets: scan in at most 1/20 of the Go
extension's requests and time, point lookups at least 2x faster, open to first row in at most
3 round trips after listing.

With --encrypted, each object of the replica is also encrypted with the reference `age`
tool (`age -r`) into a second prefix, and our VFS reads that one too (rows "ours, age"):
the cost of encryption page by page, against the plaintext rows.

Run: /usr/bin/python3 tests/bench/bench_s3.py [--rows N] [--delay-ms 20] [--encrypted] [--out FILE]
The report is written to --out and, unless --no-readme, between the s3-bench markers of
README.md.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "py"))
from harness.common import REPO_ROOT, child_env  # noqa: E402
from harness.data import create_source_db  # noqa: E402
from harness.litestream import Litestream  # noqa: E402
from harness.s3 import S3Server  # noqa: E402
from harness.sqlite_hosts import child_python, ext_path, go_vfs_path, vfs_uri  # noqa: E402
from latency_proxy import LatencyProxy  # noqa: E402

WORKLOADS = ["open", "point", "scan", "range"]

CHILD = r"""
import json, random, sqlite3, sys, time
mode, uri, ext, workload, rows = sys.argv[1:6]
rows = int(rows)
if ext:
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(ext)
t0 = time.monotonic()
conn = sqlite3.connect(uri, uri=True)
if workload == "open":
    r = conn.execute("SELECT * FROM orders LIMIT 1").fetchone()[0]
    t1 = t0
else:
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    t1 = time.monotonic()
    rnd = random.Random(42)
    if workload == "point":
        r = 0
        for _ in range(1000):
            r += len(conn.execute("SELECT * FROM orders WHERE id = ?", (rnd.randint(1, rows),)).fetchall())
    elif workload == "scan":
        r = list(conn.execute("SELECT count(*), sum(length(note)) FROM orders").fetchone())
    elif workload == "range":
        r = len(conn.execute("SELECT * FROM orders WHERE customer BETWEEN 'cust0100' AND 'cust0180'").fetchall())
t2 = time.monotonic()
stats = None
if mode == "ours":
    stats = json.loads(conn.execute("PRAGMA litestream_stats").fetchone()[0])
print(json.dumps({"t0": t0, "t1": t1, "t2": t2, "result": r, "stats": stats}))
"""


def measure(proxy, mode, uri, ext, workload, rows, env):
    mark = len(proxy.log)
    out = subprocess.run([child_python(), "-c", CHILD, mode, uri, str(ext or ""),
                          workload, str(rows)], capture_output=True, text=True, env=env,
                         timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"{mode}/{workload} failed:\n{out.stderr[-3000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    time.sleep(0.05)  # let the proxy log the last answers
    log = [q for q in proxy.log[mark:] if r["t1"] <= q.start <= r["t2"]]
    gets = [q for q in log if q.is_get]
    lists = [q for q in log if q.is_list]
    after_list = [q for q in gets if not lists or q.start >= max(x.end for x in lists)]
    return {
        "wall": r["t2"] - r["t1"],
        "gets": len(gets),
        "lists": len(lists),
        "bytes": sum(q.bytes for q in gets),
        "round_trips": _waves(after_list) if workload == "open" else None,
        "result": r["result"],
        "stats": r["stats"],
    }


def _waves(reqs):
    waves, end = 0, None
    for q in sorted(reqs, key=lambda q: q.start):
        if end is None or q.start >= end:
            waves, end = waves + 1, q.end
        else:
            end = max(end, q.end)
    return waves


def encrypt_copy(s3, bucket: str, src: str, dst: str, work: Path) -> dict:
    """Copies every object under `src` to `dst`, each encrypted with `age -r` to a new key;
    returns the environment that gives our VFS the identity."""
    key = work / "age-key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True,
                               text=True).stdout.strip()
    for name, _ in s3.list_keys(bucket, src + "/"):
        sealed = subprocess.run(["age", "-r", recipient], input=s3.get(bucket, name),
                                check=True, capture_output=True).stdout
        s3.put(bucket, dst + name[len(src):], sealed)
    return {"LITESTREAM_AGE_IDENTITY": key.read_text()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--delay-ms", type=float, default=20)
    ap.add_argument("--params", default="", help="extra URI parameters for ours (a=b&c=d)")
    ap.add_argument("--skip-go", action="store_true")
    ap.add_argument("--encrypted", action="store_true",
                    help="also read an age-encrypted copy of the replica")
    ap.add_argument("--out", default=str(REPO_ROOT / "tests/.work/bench/s3.md"))
    ap.add_argument("--no-readme", action="store_true", help="do not update README.md")
    args = ap.parse_args()

    (REPO_ROOT / "tests/.work").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-s3-", dir=REPO_ROOT / "tests/.work"))
    s3 = S3Server(work / "moto").start()
    try:
        bucket = s3.new_bucket("bench")
        src = work / "src.db"
        w = create_source_db(src, rows=args.rows, overflow_rows=0)
        w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size_mb = src.stat().st_size / 1e6
        ls = Litestream(src, s3.replica_url(bucket, "db"), workdir=work).start()
        ls.wait_synced(timeout=300)
        ls.stop()
        w.close()
        age_env = encrypt_copy(s3, bucket, "db", "enc", work) if args.encrypted else None

        with LatencyProxy(s3.endpoint, delay=args.delay_ms / 1000) as proxy:
            url = f"s3://{bucket}/db?endpoint={proxy.endpoint}&force-path-style=true"
            env = child_env()
            ours_uri = vfs_uri(url, name="bench.db")
            if args.params:
                ours_uri += "&" + args.params
            readers = {
                "native": (f"file:{src}?mode=ro", None, env),
                "ours": (ours_uri, ext_path(), env),
            }
            if age_env:
                enc_url = f"s3://{bucket}/enc?endpoint={proxy.endpoint}&force-path-style=true"
                readers["ours-age"] = (vfs_uri(enc_url, name="bench-age.db"),
                                       ext_path(), child_env(age_env))
            if not args.skip_go:
                readers["go"] = ("file:bench.db?vfs=litestream", go_vfs_path(),
                                 child_env({"LITESTREAM_REPLICA_URL": url}))
            results = {}
            for workload in WORKLOADS:
                for mode, (uri, ext, e) in readers.items():
                    r = measure(proxy, mode, uri, ext, workload, args.rows, e)
                    results[(workload, mode)] = r
                    print(f"{workload:6} {mode:7} {r['wall']*1000:9.1f} ms  GET {r['gets']:6} "
                          f"bytes {r['bytes']:10}  rt {r['round_trips']}", flush=True)
                vals = {json.dumps(results[(workload, m)]["result"]) for m in readers}
                assert len(vals) == 1, f"{workload}: readers disagree: {vals}"
    finally:
        s3.stop()

    lines = [
        f"S3 read benchmark: {args.rows:,} rows, {size_mb:.1f} MB database, replica written by "
        f"Litestream 0.5.17 to moto on 127.0.0.1 behind a proxy adding {args.delay_ms:g} ms to "
        f"every request; one run, a fresh child process per measurement "
        f"(`tests/bench/bench_s3.py`{' ' + args.params if args.params else ''}).",
        "",
        "| workload | native | ours: GETs | ours: bytes | ours: time | Go: GETs | Go: bytes "
        "| Go: time | Go/ours GETs | Go/ours time |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ms = lambda s: f"{s*1000:.0f} ms"  # noqa: E731
    for workload in WORKLOADS:
        n, o = results[(workload, "native")], results[(workload, "ours")]
        g = results.get((workload, "go"))
        row = f"| {workload} | {ms(n['wall'])} | {o['gets']} | {o['bytes']:,} | {ms(o['wall'])}"
        if g:
            row += (f" | {g['gets']} | {g['bytes']:,} | {ms(g['wall'])} "
                    f"| {g['gets']/max(o['gets'], 1):.1f}x | {g['wall']/o['wall']:.1f}x |")
        else:
            row += " | | | | | |"
        lines.append(row)
    if args.encrypted:
        lines += [
            "",
            "The same replica with every object age-encrypted (`age -r`), read by our VFS with "
            "the identity (`--encrypted`):",
            "",
            "| workload | plaintext: GETs | plaintext: bytes | plaintext: time | age: GETs "
            "| age: bytes | age: time | extra bytes |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for workload in WORKLOADS:
            o, a = results[(workload, "ours")], results[(workload, "ours-age")]
            lines.append(f"| {workload} | {o['gets']} | {o['bytes']:,} | {ms(o['wall'])} "
                         f"| {a['gets']} | {a['bytes']:,} | {ms(a['wall'])} "
                         f"| {a['bytes'] - o['bytes']:+,} |")
    o = results[("open", "ours")]
    g = results.get(("open", "go"))
    lines += [
        "",
        f"Open to first row, round trips after the listing (waves of parallel GETs): ours "
        f"{o['round_trips']}" + (f", Go {g['round_trips']}" if g else "") + ".",
    ]
    report = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(report)
    (Path(args.out).with_suffix(".json")).write_text(json.dumps(
        {f"{w}/{m}": r for (w, m), r in results.items()}, indent=1, default=str))
    print()
    print(report)
    if not args.no_readme:
        readme = REPO_ROOT / "README.md"
        text = readme.read_text()
        start, end = "<!-- s3-bench -->\n", "<!-- /s3-bench -->"
        if start in text and end in text:
            head, rest = text.split(start, 1)
            readme.write_text(head + start + report + rest[rest.index(end):])
            print(f"updated {readme}")


if __name__ == "__main__":
    main()
