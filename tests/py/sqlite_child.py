"""Runs SQLite steps in a process of its own: python3 sqlite_child.py SPEC.json OUT.json

SPEC = {"steps": [step, ...]}, each step one of
  {"op": "load",  "path": EXT}                    load EXT into a private :memory: connection
                                                  that stays open until the process exits
  {"op": "open",  "name": N, "uri": URI}          sqlite3.connect(URI, uri=True), autocommit
  {"op": "query", "conn": N, "sql": SQL, "params": [...]}   result: list of rows
  {"op": "close", "conn": N}
  {"op": "sleep", "seconds": S}
  {"op": "fds"}                                   result: the number of open descriptors
A step with "continue_on_error": true records {"error": {...}} as its result and goes on;
otherwise the first error stops the run and is reported as OUT["error"] =
{"type", "message", "step", "elapsed"} (elapsed: seconds spent in that step).
OUT = {"results": [...], "times": [...], "error": ...} (times: the wall clock at the end
of each step), rewritten after every step, so a crash leaves the
results so far. Blobs are encoded as {"$hex": "..."}. Exit status 0 unless the process dies.
"""

import json
import sqlite3
import sys
import time


def enc(v):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"$hex": bytes(v).hex()}
    return v


def main():
    spec = json.load(open(sys.argv[1]))
    out_path = sys.argv[2]
    out = {"results": [], "times": [], "error": None}
    conns = {}
    keep = []

    def flush():
        with open(out_path + ".tmp", "w") as f:
            json.dump(out, f)
        import os
        os.replace(out_path + ".tmp", out_path)

    for i, step in enumerate(spec["steps"]):
        op = step["op"]
        t0 = time.monotonic()
        try:
            if op == "load":
                c = sqlite3.connect(":memory:")
                c.enable_load_extension(True)
                c.load_extension(step["path"])
                keep.append(c)
                res = None
            elif op == "open":
                conns[step["name"]] = sqlite3.connect(step["uri"], uri=step.get("uri_mode", True),
                                                      isolation_level=None,
                                                      timeout=step.get("timeout", 10))
                res = None
            elif op == "query":
                cur = conns[step["conn"]].execute(step["sql"], step.get("params", []))
                res = [[enc(v) for v in row] for row in cur.fetchall()]
            elif op == "close":
                conns.pop(step["conn"]).close()
                res = None
            elif op == "sleep":
                time.sleep(step["seconds"])
                res = None
            elif op == "fds":
                import os
                res = len(os.listdir("/proc/self/fd"))
            else:
                raise ValueError(f"unknown op {op}")
            out["results"].append(res)
            out["times"].append(time.time())
        except Exception as e:  # noqa: BLE001 - report everything to the parent
            err = {"type": type(e).__name__, "message": str(e), "step": i,
                   "code": getattr(e, "sqlite_errorcode", None),
                   "elapsed": time.monotonic() - t0}
            if step.get("continue_on_error"):
                out["results"].append({"error": err})
                out["times"].append(time.time())
            else:
                out["error"] = err
                flush()
                break
        flush()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
