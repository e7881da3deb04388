#!/usr/bin/env python3
"""Restore benchmark: `litestream restore` (the peer, Litestream 0.5.17) against our
`SELECT litestream_restore(path)`, on one replica written by the real Litestream to moto
(S3-compatible, 127.0.0.1) and read through a proxy that delays every request (default
20 ms, a same-region S3 round trip) and counts it.

Each restore is a fresh child process, timed from its start to its end (both pay their
start-up and listing); the outputs must be byte-identical. Peak RSS is the child's
(`ru_maxrss`), taken by a small wrapper process.

Run: /usr/bin/python3 tests/bench/bench_restore.py [--rows 570000] [--delay-ms 20]
     [--rounds 3] [--variant "restore_part_size=64MB&restore_concurrency=4" ...]
     [--server moto|s3rver] [--out FILE]
(570,000 rows make a database of about 55 MB; 11,500,000 about 1.16 GB.) Each --variant adds
a row: our restore with those URI parameters.

moto answers a ranged GET of a large object in time proportional to the object, not the
range (it reads the whole value: 0.36 s for 8 MiB or 64 KiB of a 700 MB object here, 0.69 s
for all of it), and serves one request at a time: on a large snapshot, many parts cost moto
far more than they would cost S3. Fewer, larger parts (a variant) show what is moto's.
`--server s3rver` runs the same on s3rver (npm), which reads only the range asked for.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "py"))
from harness.common import AWS_TEST_ENV, REPO_ROOT, child_env  # noqa: E402
from harness.data import create_source_db  # noqa: E402
from harness.litestream import Litestream, litestream_bin  # noqa: E402
from harness.s3 import S3Server  # noqa: E402
from harness.sqlite_hosts import child_python, ext_path, vfs_uri  # noqa: E402
from latency_proxy import LatencyProxy  # noqa: E402
from s3rver import S3rver, ENV as S3RVER_ENV  # noqa: E402

# Runs argv, then prints its wall time and peak RSS (KiB) as JSON.
WRAPPER = r"""
import json, resource, subprocess, sys, time
t0 = time.time()
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
t1 = time.time()
if p.returncode != 0:
    sys.exit(p.stderr[-3000:] or p.stdout[-3000:])
print(json.dumps({"t0": t0, "t1": t1,
                  "rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""

OURS = r"""
import sqlite3, sys
ext, uri, out = sys.argv[1:4]
l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(ext)
c = sqlite3.connect(uri, uri=True)
c.execute("SELECT litestream_restore(?)", (out,)).fetchone()
"""


def run(proxy, argv, env) -> dict:
    mark = len(proxy.log)
    p = subprocess.run([child_python(), "-c", WRAPPER, *argv], capture_output=True,
                       text=True, env=env, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    r = json.loads(p.stdout.strip().splitlines()[-1])
    time.sleep(0.05)  # let the proxy log the last answers
    gets = [q for q in proxy.log[mark:] if q.is_get]
    return {"wall": r["t1"] - r["t0"], "gets": len(gets), "bytes": sum(q.bytes for q in gets),
            "rss_mib": r["rss_kib"] / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=570_000)
    ap.add_argument("--delay-ms", type=float, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--server", choices=["moto", "s3rver"], default="moto")
    ap.add_argument("--variant", action="append", default=[],
                    help="URI parameters of another run of ours, k=v&k=v")
    a = ap.parse_args()
    (REPO_ROOT / "tests/.work").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-restore-", dir=REPO_ROOT / "tests/.work"))
    if a.server == "moto":
        s3 = S3Server(work / "moto").start()
        bucket = s3.new_bucket("bench")
        replica_url, server_env = s3.replica_url(bucket, "db"), {}
    else:
        # s3rver takes one key pair: the harness's children and its own signed listings
        # (wait_synced) use it from here on.
        AWS_TEST_ENV.update(S3RVER_ENV)
        bucket = "bench"
        s3 = S3rver(work, bucket).start()
        replica_url, server_env = s3.replica_url("db"), {}
    try:
        src = work / "src.db"
        w = create_source_db(src, rows=a.rows, overflow_rows=0)
        w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size_mb = src.stat().st_size / 1e6
        ls = Litestream(src, replica_url, workdir=work, env=server_env).start()
        ls.wait_synced(timeout=600)
        ls.stop()
        w.close()
        results = {"peer": [], "ours": [], **{v: [] for v in a.variant}}
        with LatencyProxy(s3.endpoint, delay=a.delay_ms / 1000) as proxy:
            url = f"s3://{bucket}/db?endpoint={proxy.endpoint}&force-path-style=true"
            env = child_env(server_env)
            for i in range(a.rounds):
                peer_out, our_out = work / f"peer{i}.db", work / f"ours{i}.db"
                results["peer"].append(run(proxy, [str(litestream_bin()), "restore",
                                                   "-o", str(peer_out), url], env))
                results["ours"].append(run(proxy, [child_python(), "-c", OURS,
                                                   str(ext_path()),
                                                   vfs_uri(url, name=f"r{i}.db"),
                                                   str(our_out)], env))
                assert peer_out.read_bytes() == our_out.read_bytes(), "outputs differ"
                for v in a.variant:
                    var_out = work / f"var{i}.db"
                    params = dict(p.split("=", 1) for p in v.split("&"))
                    results[v].append(run(proxy, [child_python(), "-c", OURS, str(ext_path()),
                                                  vfs_uri(url, name=f"v{i}.db", **params),
                                                  str(var_out)], env))
                    assert peer_out.read_bytes() == var_out.read_bytes(), "outputs differ"
                    var_out.unlink()
                for r in results.values():
                    print(r[-1], flush=True)
                peer_out.unlink()
                our_out.unlink()
    finally:
        s3.stop()
    med = {k: statistics.median(r["wall"] for r in v) for k, v in results.items()}
    lines = [
        f"Restore benchmark: {a.rows:,} rows, {size_mb:.1f} MB database, replica written by "
        f"Litestream 0.5.17 to {a.server} on 127.0.0.1 behind a proxy adding {a.delay_ms:g} ms to every "
        f"request; median of {a.rounds} runs, each a fresh process; outputs byte-identical "
        "(`tests/bench/bench_restore.py`).",
        "",
        "| restore | time (median) | runs | GETs | bytes | peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    for name, label in (("peer", "`litestream restore -o` (Litestream 0.5.17)"),
                        ("ours", "`SELECT litestream_restore(path)` (ours)"),
                        *((v, f"ours, `{v}`") for v in a.variant)):
        rs = results[name]
        runs = ", ".join(f"{r['wall']:.2f}" for r in rs)
        lines.append(f"| {label} | {med[name]:.2f} s | {runs} | {rs[-1]['gets']} | "
                     f"{rs[-1]['bytes']:,} | {max(r['rss_mib'] for r in rs):.0f} MiB |")
    lines += ["", f"Ours is {med['peer'] / med['ours']:.1f}x the peer's speed."]
    report = "\n".join(lines)
    print(report)
    if a.out:
        a.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
