#!/usr/bin/env python3
"""Multi-process write benchmark: several writer processes on one database,
through the primary (role=primary, sync=local, file:// replica) against the same number of
plain WAL writers, and the takeover time after the shipping process is killed.

Each round starts N writer processes that wait on a common start signal, then each commits
M single-row transactions (an INSERT in autocommit mode, busy timeout 60 s); the round's rate
is N*M divided by the time from the signal to the last writer's end. SQLite's busy handler
lets one writer run while the others sleep, up to 100 ms at a time, so that rate also
measures how long the last writer was starved; `--seconds S` runs time-boxed rounds instead,
whose rate is every writer's commits in S seconds. M is 50,000 by default: rounds of 3-4 s
measure the steady rate, where rounds of 5,000 commits (0.3-0.4 s) are mostly the writers'
start and the last one's starvation (there the idle-thread control alone loses 5-7 %).
Native and primary rounds run interleaved with a control, native writers whose processes each have one idle thread (what
any in-process replication costs a process: its system calls and malloc take their
multi-threaded paths); each row reports the median round (the machines are shared and
noisy; only ratios within one run mean anything).

Takeover: three primary writers commit continuously; the leader (the pid the leader
publishes in <db>-litestream/progress) is killed with SIGKILL, and the time until another
process has taken over (published its pid) and until the replica moves on again is taken,
over several kills.

CPU per commit (`--cpu`): the rate depends on how the two cores are shared and varies
between runs; the CPU all processes spend per commit (`getrusage` of the children, the
marginal cost between rounds of 2,000 and 12,000 commits a writer) is steadier.

Run: /usr/bin/python3 tests/bench/bench_multiwrite.py [--writers 4] [--commits 50000]
     [--rounds 5] [--kills 5] [--seconds S] [--cpu] [--out FILE]
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "py"))
from harness.common import child_env, wait_until  # noqa: E402
from harness.sqlite_hosts import child_python, ext_path, vfs_uri  # noqa: E402

WRITER = r"""
import os, sqlite3, sys, threading, time
uri, ext, n, go, wid = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
if len(sys.argv) > 6 and sys.argv[6] == "thread":
    # The control: a native writer whose process has one more thread, asleep. Any thread
    # makes the kernel count references on every file system call and glibc take its
    # multi-threaded paths; the primary's processes all have threads (its runtime).
    threading.Thread(target=time.sleep, args=(10**6,), daemon=True).start()
if ext:
    l = sqlite3.connect(":memory:"); l.enable_load_extension(True); l.load_extension(ext)
c = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
c.execute("PRAGMA journal_mode=WAL")
c.execute("PRAGMA synchronous=NORMAL")
print("ready", flush=True)
while not os.path.exists(go):
    time.sleep(0.0005)
# n > 0: n commits; n < 0: commits for -n milliseconds after the start signal.
until = os.stat(go).st_mtime - n / 1000 if n < 0 else None
done = 0
while done < n if until is None else time.time() < until:
    c.execute("INSERT INTO t(w, v) VALUES (?, ?)", (wid, "x" * 200))
    done += 1
t = time.time()
c.close()
print(f"done {done} {t}", flush=True)
"""


def create(db: Path) -> None:
    import sqlite3
    c = sqlite3.connect(db)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, w TEXT, v TEXT)")
    c.commit()
    c.close()


def round_(work: Path, ext: str, writers: int, commits: int, primary: bool, seconds: float = 0,
           thread: bool = False, **params) -> float:
    """One round's commits/s: `commits` each, over the time until the last writer is done;
    or, with `seconds`, as many as the writers make in that time."""
    db = work / "app.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    import shutil
    shutil.rmtree(str(db) + "-litestream", ignore_errors=True)
    shutil.rmtree(work / "replica", ignore_errors=True)
    create(db)
    uri = (vfs_uri((work / "replica").as_uri(), name=str(db), role="primary", **params)
           if primary else f"file:{db}")
    go = work / "go"
    go.unlink(missing_ok=True)
    n = -round(seconds * 1000) if seconds else commits
    procs = [subprocess.Popen([child_python(), "-c", WRITER, uri, ext if primary else "",
                               str(n), str(go), f"w{i}", "thread" if thread else ""],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=child_env()) for i in range(writers)]
    for p in procs:
        line = p.stdout.readline()
        assert line.startswith("ready"), p.stderr.read()
    t0 = time.time()
    go.touch()
    ends, made = [], 0
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        made += int(out.split()[-2])
        ends.append(float(out.split()[-1]))
    if seconds:
        return made / seconds
    return writers * commits / (max(ends) - t0)


def cpu_per_commit(work: Path, ext: str, writers: int, rounds: int) -> dict:
    """Marginal CPU (µs) per commit of every process, native and primary, median of rounds."""
    import resource

    def cpu():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    out = {"native": [], "primary": []}
    for _ in range(rounds):
        for name in out:
            spent = []
            for n in (2000, 12000):
                c0 = cpu()
                round_(work, ext, writers, n, name == "primary")
                spent.append(cpu() - c0)
            out[name].append((spent[1] - spent[0]) / (writers * 10000) * 1e6)
    return {k: statistics.median(v) for k, v in out.items()}


def progress_pid(meta: Path):
    p = meta / "progress"
    try:
        raw = p.read_bytes()
        n = int.from_bytes(raw[4:8], "big")
        return json.loads(raw[20:20 + n])
    except (OSError, ValueError):
        return None


def takeover(work: Path, ext: str, kills: int) -> list:
    db = work / "t.db"
    create(db)
    url = (work / "treplica").as_uri()
    uri = vfs_uri(url, name=str(db), role="primary")
    meta = Path(str(db) + "-litestream")
    go = work / "tgo"
    go.touch()
    procs = []

    def spawn():
        p = subprocess.Popen([child_python(), "-c", WRITER, uri, ext, "100000000",
                              str(go), "t"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=child_env())
        assert p.stdout.readline().startswith("ready")
        return p

    procs = [spawn() for _ in range(3)]
    results = []
    try:
        for _ in range(kills):
            wait_until(lambda: (progress_pid(meta) or {}).get("pid") in [p.pid for p in procs], 30)
            time.sleep(0.5)
            leader = progress_pid(meta)["pid"]
            shipped_before = progress_pid(meta)["shipped_txid"]
            victim = next(p for p in procs if p.pid == leader)
            t0 = time.monotonic()
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            procs.remove(victim)
            wait_until(lambda: (progress_pid(meta) or {}).get("pid") not in (leader, None), 30, 0.002)
            took = time.monotonic() - t0
            wait_until(lambda: progress_pid(meta)["shipped_txid"] > shipped_before, 30, 0.002)
            shipped = time.monotonic() - t0
            results.append((took, shipped))
            procs.append(spawn())
    finally:
        for p in procs:
            p.kill()
            p.wait()
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--commits", type=int, default=50000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0,
                    help="time-boxed rounds: commits made in this time, not a fixed number")
    ap.add_argument("--cpu", action="store_true", help="measure CPU per commit only")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    ext = str(ext_path())
    with tempfile.TemporaryDirectory(prefix="bench-multiwrite-") as d:
        work = Path(d)
        if a.cpu:
            c = cpu_per_commit(work, ext, a.writers, a.rounds)
            print(f"CPU per commit, {a.writers} writers, median of {a.rounds}: native "
                  f"{c['native']:.1f} µs, primary {c['primary']:.1f} µs")
            return
        rates = {"native": [], "thread": [], "primary": []}
        for r in range(a.rounds):
            for name in rates:
                rate = round_(work, ext, a.writers, a.commits, name == "primary", a.seconds,
                              thread=name == "thread")
                rates[name].append(rate)
                print(f"round {r} {name}: {rate:.0f} commits/s", file=sys.stderr)
        kills = takeover(work, ext, a.kills)
    med = {k: statistics.median(v) for k, v in rates.items()}
    lines = [
        f"Multi-process write benchmark: {a.writers} writer processes on one database, "
        + (f"single-row transactions for {a.seconds:g} s (all writers' commits over that time)"
           if a.seconds else f"{a.commits} single-row transactions each (until the last is done)")
        + f", median of {a.rounds} interleaved rounds; "
        f"takeover over {a.kills} SIGKILLs of the shipping process "
        "(`tests/bench/bench_multiwrite.py`).",
        "",
        "| writers | commits/s (median) | rounds | vs native |",
        "|---|---|---|---|",
        f"| {a.writers} native WAL processes | {med['native']:.0f} | "
        f"{', '.join(f'{x:.0f}' for x in rates['native'])} | 1.00x |",
        f"| {a.writers} native WAL processes with one idle thread each (control) | "
        f"{med['thread']:.0f} | {', '.join(f'{x:.0f}' for x in rates['thread'])} | "
        f"{med['thread'] / med['native']:.2f}x |",
        f"| {a.writers} primary processes (sync=local, file://) | {med['primary']:.0f} | "
        f"{', '.join(f'{x:.0f}' for x in rates['primary'])} | {med['primary'] / med['native']:.2f}x |",
        "",
        "| after SIGKILL of the shipping process | median | max |",
        "|---|---|---|",
        f"| another process ships (took over) | {statistics.median(k[0] for k in kills) * 1000:.0f} ms "
        f"| {max(k[0] for k in kills) * 1000:.0f} ms |",
        f"| the replica moves on again | {statistics.median(k[1] for k in kills) * 1000:.0f} ms "
        f"| {max(k[1] for k in kills) * 1000:.0f} ms |",
    ]
    report = "\n".join(lines)
    print(report)
    if a.out:
        a.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
