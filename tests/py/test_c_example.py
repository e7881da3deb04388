"""The C example (c/query_replica.c), compiled with the system compiler against the system
libsqlite3 and linked to the built library, queries a replica written by the real
Litestream."""

import shutil
import sqlite3
import subprocess

import pytest

from harness.common import REPO_ROOT, child_env

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "ltx" / "v0.5.17-4096"


@pytest.fixture(scope="module")
def query_replica(tmp_path_factory, ext_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "no C compiler (tests/setup.sh installs gcc)"
    out = tmp_path_factory.mktemp("c") / "query_replica"
    subprocess.run([cc, "-Wall", "-Werror", f"-I{REPO_ROOT / 'include'}",
                    str(REPO_ROOT / "c" / "query_replica.c"), f"-L{ext_path.parent}",
                    "-llitestream", "-lsqlite3", "-o", str(out)], check=True)
    return out


def run(binary, ext_path, *args, env=None):
    env = child_env({"LD_LIBRARY_PATH": str(ext_path.parent), **(env or {})})
    return subprocess.run([str(binary), *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_c_program_queries_a_replica(query_replica, ext_path, tmp_path):
    root = tmp_path / "replica"
    shutil.copytree(FIXTURE / "replica", root)
    res = run(query_replica, ext_path, root.as_uri(),
              "SELECT count(*), litestream_txid() FROM t")
    assert res.returncode == 0, res.stderr
    want = sqlite3.connect(f"file:{FIXTURE / 'restored-0000000000000004.db'}?immutable=1",
                           uri=True).execute("SELECT count(*) FROM t").fetchone()[0]
    assert res.stdout.strip() == f"{want}\t0000000000000004"


def test_the_log_reaches_the_hosts_sqlite3_log(query_replica, ext_path, tmp_path):
    """The extension's log goes through sqlite3_log, where the host's logger takes it (the
    program prints each line as "log(<code>): <line>"), one `litestream <level>:` prefix
    per line; SQLITE_NOTICE (27) for debug and info."""
    root = tmp_path / "replica"
    shutil.copytree(FIXTURE / "replica", root)
    res = run(query_replica, ext_path, root.as_uri(), "SELECT count(*) FROM t",
              env={"LITESTREAM_LOG_LEVEL": "debug"})
    assert res.returncode == 0, res.stderr
    logged = [line for line in res.stderr.splitlines() if line.startswith("log(")]
    assert any(line.startswith("log(27): litestream debug: plan: ") for line in logged), \
        res.stderr
    assert not any("litestream: litestream" in line or "debug: litestream:" in line
                   for line in res.stderr.splitlines()), res.stderr


def test_c_program_reports_open_errors(query_replica, ext_path, tmp_path):
    res = run(query_replica, ext_path, "ftp://nowhere/replica", "SELECT 1")
    assert res.returncode == 1
    assert "unsupported scheme" in res.stderr, res.stderr


def test_c_program_travels_in_time(query_replica, ext_path, tmp_path):
    # litestream_config.time: TXID 1 was written at 19:56:50.922Z and TXID 2 at 19:56:51.920Z.
    root = tmp_path / "replica"
    shutil.copytree(FIXTURE / "replica", root)
    res = run(query_replica, ext_path, root.as_uri(),
              "SELECT count(*), litestream_txid() FROM t", "2026-11-21T19:56:51.500Z")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "4\t0000000000000001"


def test_c_helper_escapes_the_replica_url(query_replica, ext_path, tmp_path):
    # The file URL of this folder holds %20, %26 ('&'), %23 ('#') and %25 ('%'): each '%' must
    # reach the extension as is, so litestream_uri() has to escape it (and would have to
    # escape a literal '&' or '#') inside the SQLite URI.
    root = tmp_path / "a b&c#d%e" / "replica"
    shutil.copytree(FIXTURE / "replica", root)
    url = root.as_uri()
    assert "%25" in url and "%23" in url
    res = run(query_replica, ext_path, url, "SELECT litestream_txid()")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "0000000000000004"


def test_c_program_sees_restore_progress_and_can_cancel(query_replica, ext_path, tmp_path):
    root = tmp_path / "replica"
    shutil.copytree(FIXTURE / "replica", root)
    out = tmp_path / "copy.db"
    sql = f"SELECT litestream_restore('{out}')"
    res = run(query_replica, ext_path, root.as_uri(), sql)
    assert res.returncode == 0, res.stderr
    lines = [line.split() for line in res.stderr.splitlines() if line.startswith("progress:")]
    assert lines, res.stderr
    assert all(w[1:3] == ["restore", str(out)] for w in lines), lines
    done, total = map(int, lines[-1][3].split("/"))
    assert done == total > 0, lines
    want = FIXTURE / "restored-0000000000000004.db"
    assert out.read_bytes() == want.read_bytes()

    # The callback asks to stop: the restore fails as interrupted, and leaves no file.
    out.unlink()
    env_run = child_env({"LD_LIBRARY_PATH": str(ext_path.parent),
                         "QUERY_REPLICA_STOP_AT": "1"})
    res = subprocess.run([str(query_replica), root.as_uri(), sql], capture_output=True,
                         text=True, env=env_run, timeout=60)
    assert res.returncode == 1
    assert "interrupted" in res.stderr, res.stderr
    assert not out.exists()
    assert list(tmp_path.glob("copy.db*")) == []
