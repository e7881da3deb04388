#!/usr/bin/env python3
"""One idle replica, our extension against Litestream's Go extension: the requests each makes
per replica-hour while nobody writes, and their price. The Go extension is configured only by
the environment (one replica per process), so the scale benchmark (bench_scale.py) cannot
run it at 10, 100 or 1,000 replicas; this is its per-replica figure.

moto on 127.0.0.1 behind the counting LatencyProxy (no delay). A small replica is written by
our primary; each extension then opens it in a child process, reads one row and sits idle for
--idle seconds; the window starts 5 s after the child starts.

Run: /usr/bin/python3 tests/bench/bench_idle_go.py [--idle 40]
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "py"))
from harness.common import child_env  # noqa: E402
from harness.s3 import S3Server  # noqa: E402
from harness.sqlite_hosts import (connect, ext_path, go_vfs_path, run_sqlite_child,  # noqa: E402
                                  vfs_uri, wait_shipped)
from latency_proxy import LatencyProxy  # noqa: E402

LIST_PRICE, GET_PRICE = 0.005 / 1000, 0.0004 / 1000


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--idle", type=float, default=40)
    a = ap.parse_args()
    os.environ.update(child_env())
    work = tempfile.mkdtemp(prefix="bench-idle-go-")
    srv = S3Server(work).start()
    try:
        bucket = srv.new_bucket("idle")
        with LatencyProxy(srv.endpoint, delay=0) as proxy:
            url = f"s3://{bucket}/db?endpoint={proxy.endpoint}&force-path-style=true"
            w = connect(vfs_uri(url, name=f"{work}/app.db", role="primary", sync="remote"))
            w.execute("CREATE TABLE t(x)")
            w.execute("INSERT INTO t VALUES (1)")
            wait_shipped(w)
            w.close()
            time.sleep(1)
            rows = {}
            for name, ext, env, uri in [
                ("Go extension 0.5.17", go_vfs_path(),
                 {"LITESTREAM_REPLICA_URL": url, "LITESTREAM_LOG_FILE": f"{work}/go.log"},
                 "file:r.db?vfs=litestream"),
                ("ours", ext_path(), {}, vfs_uri(url, name="r2.db")),
            ]:
                steps = [{"op": "load", "path": str(ext).removesuffix(".so")},
                         {"op": "open", "name": "r", "uri": uri},
                         {"op": "query", "conn": "r", "sql": "SELECT count(*) FROM t"},
                         {"op": "sleep", "seconds": a.idle}]
                done = {}
                th = threading.Thread(target=lambda: done.setdefault(
                    "r", run_sqlite_child(steps, env=env, timeout=a.idle + 60)))
                th.start()
                time.sleep(5)
                mark, t0 = len(proxy.log), time.time()
                th.join()
                hours = (time.time() - t0) / 3600
                window = proxy.log[mark:]
                lists = sum(q.is_list for q in window)
                gets = sum(q.is_get for q in window)
                r = done["r"]
                assert r.error is None and r.results[2] == [[1]], r.describe()
                rows[name] = {"list_per_hour": round(lists / hours),
                              "get_per_hour": round(gets / hours),
                              "usd_per_hour": (lists * LIST_PRICE + gets * GET_PRICE) / hours}
    finally:
        srv.stop()
    print(f"| one idle replica ({a.idle:.0f} s) | LIST / hour | GET / hour | $ / replica-hour |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['list_per_hour']} | {r['get_per_hour']} | ${r['usd_per_hour']:.6f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
