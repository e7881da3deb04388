"""Replicas written by the real Litestream 0.5.17 and 0.5.10 (tests/fixtures/ltx, see its
README), read through the VFS; and every error class, with its SQLite error code and message.
"""

import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from harness.common import REPO_ROOT, child_env
from harness.litestream import restore
from harness.sqlite_hosts import child_python, connect, vfs_uri

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "ltx"
SETS = ["v0.5.17-1024", "v0.5.17-4096", "v0.5.17-65536", "v0.5.10-1024", "v0.5.10-65536",
        "mixed-1024"]


def rows(conn):
    return conn.execute("SELECT id, v FROM t ORDER BY id").fetchall()


def copy_replica(name, tmp_path) -> Path:
    dest = tmp_path / name
    shutil.copytree(FIXTURES / name / "replica", dest)
    return dest


def l0_only_replica(tmp_path, drop=()) -> Path:
    """The 4 KiB fixture with only its L0 files (TXIDs 1-4, each its own file), less `drop`."""
    root = copy_replica("v0.5.17-4096", tmp_path)
    for level in ("1", "9"):
        shutil.rmtree(root / "ltx" / level)
    for txid in drop:
        (root / "ltx" / "0" / f"{txid:016x}-{txid:016x}.ltx").unlink()
    return root


@pytest.mark.parametrize("name", SETS)
def test_fixture_replicas_read_like_litestream_restore(name, tmp_path, ext_path):
    """Includes `mixed-1024`, one chain whose files use both page encodings (LZ4 frames from
    0.5.10, LZ4 blocks from 0.5.17)."""
    root = copy_replica(name, tmp_path)
    url = root.as_uri()
    expected_db = tmp_path / "restored.db"
    restore(url, expected_db)
    want = rows(sqlite3.connect(str(expected_db)))
    r = connect(vfs_uri(url, name=f"{name}.db"), ext=ext_path)
    assert rows(r) == want
    assert r.execute("SELECT litestream_txid()").fetchone()[0] == "0000000000000004"
    assert r.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    kept = FIXTURES / name / "restored-0000000000000004.db"
    if kept.exists():
        assert rows(r) == rows(sqlite3.connect(f"file:{kept}?immutable=1", uri=True))
    # litestream_restore writes what `litestream restore` writes, byte for byte, for every
    # page size and both page encodings (the chains hold snapshots, L1 and L0 files).
    ours = tmp_path / "ours.db"
    r.execute("SELECT litestream_restore(?)", (str(ours),)).fetchone()
    assert ours.read_bytes() == expected_db.read_bytes()


# ---------------------------------------------------------------------------------------------
# Errors: code and message


def open_error(uri, ext_path):
    with pytest.raises(sqlite3.Error) as info:
        conn = connect(uri, ext=ext_path)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
    # The cause alone, not SQLite's "automatic extension loading failed: " before it.
    assert str(info.value).startswith("litestream: "), info.value
    return info.value


def test_missing_url_is_cantopen(ext_path):
    e = open_error(vfs_uri(None, name="nourl.db"), ext_path)
    assert e.sqlite_errorname == "SQLITE_CANTOPEN" and "replica_url" in str(e), e


def test_invalid_url_is_cantopen(ext_path):
    e = open_error(vfs_uri("ftp://host/replica"), ext_path)
    assert e.sqlite_errorname == "SQLITE_CANTOPEN", e
    assert "ftp://host/replica" in str(e) and "unsupported scheme" in str(e), e
    e = open_error(vfs_uri("s3:///no-bucket"), ext_path)
    assert e.sqlite_errorname == "SQLITE_CANTOPEN" and "bucket" in str(e), e


@pytest.mark.parametrize("param,value", [("poll_interval", "abc"), ("cache_size", "lots"),
                                         ("open_timeout", "-2s"), ("log_level", "chatty"),
                                         ("pol_interval", "1s")])
def test_bad_parameter_is_cantopen_naming_it(param, value, tmp_path, ext_path):
    url = copy_replica("v0.5.17-4096", tmp_path).as_uri()
    e = open_error(vfs_uri(url, **{param: value}), ext_path)
    assert e.sqlite_errorname == "SQLITE_CANTOPEN" and param in str(e), e


def test_unescaped_replica_url_query_is_explained(ext_path):
    # The replica URL's own '&' not escaped: its second parameter reaches the VFS as the
    # database's, and the error says how to write it.
    e = open_error("file:x.db?vfs=litestream&replica_url=s3://b/app?endpoint=http://h:9"
                   "&region=us-east-1", ext_path)
    assert e.sqlite_errorname == "SQLITE_CANTOPEN", e
    assert "region" in str(e) and "%26" in str(e), e


def test_primary_that_disagrees_with_its_replica_is_cantopen(tmp_path, ext_path):
    # The Go extension's write mode is our primary: a local database that never shipped to
    # this (existing) replica must not silently fork it.
    url = copy_replica("v0.5.17-4096", tmp_path).as_uri()
    local = tmp_path / "local.db"
    sqlite3.connect(local).executescript("CREATE TABLE x(y); INSERT INTO x VALUES (1);")
    e = open_error(vfs_uri(url, name=str(local), write_enabled="true"), ext_path)
    assert e.sqlite_errorname == "SQLITE_CANTOPEN", e
    assert "disagree" in str(e) and "restore=never" in str(e), e


def test_primary_cannot_continue_a_replica_with_a_gap(tmp_path, ext_path):
    root = l0_only_replica(tmp_path, drop=[3])
    e = open_error(vfs_uri(root.as_uri(), name=str(tmp_path / "p.db"), role="primary"), ext_path)
    # The same error a reader gets: the hole named (one mapping of plan problems).
    assert e.sqlite_errorname == "SQLITE_CANTOPEN", e
    assert "missing 0000000000000003" in str(e) and "incomplete" in str(e), e


def test_empty_replica_waits_open_timeout_then_cantopen(tmp_path, ext_path):
    t0 = time.monotonic()
    e = open_error(vfs_uri((tmp_path / "empty").as_uri(), open_timeout="700ms"), ext_path)
    took = time.monotonic() - t0
    assert e.sqlite_errorname == "SQLITE_CANTOPEN" and "no LTX files" in str(e), e
    assert 0.6 < took < 10, took


def test_gap_in_chain_is_cantopen_naming_the_hole(tmp_path, ext_path):
    root = l0_only_replica(tmp_path, drop=[3])
    e = open_error(vfs_uri(root.as_uri()), ext_path)
    assert e.sqlite_errorname == "SQLITE_CANTOPEN", e
    assert "0000000000000003" in str(e) and "missing" in str(e), e


def test_no_snapshot_is_cantopen(tmp_path, ext_path):
    root = l0_only_replica(tmp_path, drop=[1])
    e = open_error(vfs_uri(root.as_uri()), ext_path)
    assert e.sqlite_errorname == "SQLITE_CANTOPEN" and "no snapshot" in str(e), e


def test_unreachable_storage_is_ioerr_with_cause(ext_path):
    url = "s3://bkt/app?endpoint=http://127.0.0.1:1&force-path-style=true"
    t0 = time.monotonic()
    e = open_error(vfs_uri(url, open_timeout="1s"), ext_path)
    assert time.monotonic() - t0 < 10
    assert e.sqlite_errorname == "SQLITE_IOERR_READ", e
    assert "127.0.0.1:1" in str(e) and "storage error" in str(e), e


def newest_l0(root: Path) -> Path:
    return max((root / "ltx" / "0").glob("*.ltx"))


def test_corrupt_header_is_corrupt_naming_the_file(tmp_path, ext_path):
    root = copy_replica("v0.5.17-4096", tmp_path)
    f = newest_l0(root)
    data = bytearray(f.read_bytes())
    data[0:4] = b"XXXX"
    f.write_bytes(bytes(data))
    e = open_error(vfs_uri(root.as_uri()), ext_path)
    assert e.sqlite_errorname == "SQLITE_CORRUPT", e
    assert f.name in str(e) and "magic" in str(e), e


def test_truncated_file_is_corrupt_naming_the_file(tmp_path, ext_path):
    root = copy_replica("v0.5.17-4096", tmp_path)
    f = newest_l0(root)
    f.write_bytes(f.read_bytes()[:60])
    e = open_error(vfs_uri(root.as_uri()), ext_path)
    assert e.sqlite_errorname == "SQLITE_CORRUPT", e
    assert f.name in str(e) and "truncated" in str(e), e


def test_corrupt_page_at_query_time_is_corrupt(tmp_path, ext_path):
    """A damaged page frame behind an intact header and index: the open succeeds, the read
    of that page fails with SQLITE_CORRUPT, and litestream_stats names the file."""
    # Later files may hold newer versions of page 2: keep file 1 alone, so page 2 comes from it.
    root = l0_only_replica(tmp_path, drop=[2, 3, 4])
    base = root / "ltx" / "0" / "0000000000000001-0000000000000001.ltx"
    data = bytearray(base.read_bytes())
    # Frame of page 1 at offset 100: pgno u32, flags u16, compressed size u32, LZ4 block.
    size1 = int.from_bytes(data[106:110], "big")
    page2 = 110 + size1
    assert int.from_bytes(data[page2:page2 + 4], "big") == 2
    payload = page2 + 10
    data[payload:payload + 16] = b"\xff" * 16
    base.write_bytes(bytes(data))
    r = connect(vfs_uri(root.as_uri(), name="corrupt.db"), ext=ext_path)
    with pytest.raises(sqlite3.DatabaseError) as info:
        r.execute("SELECT * FROM t").fetchall()
    assert info.value.sqlite_errorname == "SQLITE_CORRUPT", info.value
    stats = json.loads(r.execute("SELECT litestream_stats()").fetchone()[0])
    assert base.name in stats["reads"]["last_error"], stats


def test_write_is_readonly(tmp_path, ext_path):
    url = copy_replica("v0.5.17-4096", tmp_path).as_uri()
    r = connect(vfs_uri(url), ext=ext_path)
    before = rows(r)
    with pytest.raises(sqlite3.OperationalError) as info:
        r.execute("INSERT INTO t(v) VALUES ('nope')")
    assert info.value.sqlite_errorname == "SQLITE_READONLY", info.value
    assert "readonly" in str(info.value)
    assert rows(r) == before


def damage_after_open(tmp_path, ext_path, damage):
    """Opens a reader on a replica whose one file holds every page, applies `damage` to that
    file once the open has loaded its index, reads the table, and returns the error and the
    reader's last read error from litestream_stats."""
    root = l0_only_replica(tmp_path, drop=[2, 3, 4])
    base = root / "ltx" / "0" / "0000000000000001-0000000000000001.ltx"
    r = connect(vfs_uri(root.as_uri(), name="damaged.db"), ext=ext_path)
    damage(base)
    with pytest.raises(sqlite3.Error) as info:
        r.execute("SELECT * FROM t").fetchall()
    stats = json.loads(r.execute("SELECT litestream_stats()").fetchone()[0])
    assert base.name in stats["reads"]["last_error"], stats
    return info.value, stats["reads"]["last_error"]


def test_file_deleted_after_open_is_ioerr_naming_it(tmp_path, ext_path):
    """Nothing else reaches TXID 1 any more: the read fails as a read, naming the file."""
    e, last = damage_after_open(tmp_path, ext_path, lambda f: f.unlink())
    assert e.sqlite_errorname == "SQLITE_IOERR_READ", e
    assert "not found" in last


def test_file_truncated_after_open_is_corrupt(tmp_path, ext_path):
    e, last = damage_after_open(tmp_path, ext_path,
                                lambda f: f.write_bytes(f.read_bytes()[:200]))
    assert e.sqlite_errorname == "SQLITE_CORRUPT", e
    assert "truncated" in last


def test_restore_errors(tmp_path, ext_path):
    url = copy_replica("v0.5.17-4096", tmp_path).as_uri()
    r = connect(vfs_uri(url, name="restore-errors.db"), ext=ext_path)
    with pytest.raises(sqlite3.Error, match="litestream_restore.*is not an instant"):
        r.execute("SELECT litestream_restore(?, 'someday')", (str(tmp_path / "x.db"),)).fetchone()
    missing_dir = tmp_path / "no" / "such" / "dir" / "x.db"
    with pytest.raises(sqlite3.Error) as info:
        r.execute("SELECT litestream_restore(?)", (str(missing_dir),)).fetchone()
    assert info.value.sqlite_errorname == "SQLITE_IOERR", info.value
    assert "no/such/dir" in str(info.value)
    # An existing file is not replaced unless asked (the Litestream CLI refuses too).
    existing = tmp_path / "precious.db"
    existing.write_bytes(b"not a replica")
    with pytest.raises(sqlite3.Error, match="already exists") as info:
        r.execute("SELECT litestream_restore(?)", (str(existing),)).fetchone()
    assert existing.read_bytes() == b"not a replica"
    assert not missing_dir.exists()
    with pytest.raises(sqlite3.Error, match="overwrite.*true or false|true or false"):
        r.execute("SELECT litestream_restore(?, NULL, 'main', 'maybe')", (str(existing),))
    # Asked: replaced whole, except a database with a WAL beside it (it may be open, and
    # SQLite would apply that WAL to the restored file).
    wal = tmp_path / "precious.db-wal"
    wal.write_bytes(b"frames")
    with pytest.raises(sqlite3.Error, match="-wal exists"):
        r.execute("SELECT litestream_restore(?, NULL, 'main', 1)", (str(existing),)).fetchone()
    assert existing.read_bytes() == b"not a replica"
    wal.unlink()
    pages = r.execute("SELECT litestream_restore(?, NULL, 'main', 1)",
                      (str(existing),)).fetchone()[0]
    assert pages > 0
    assert sqlite3.connect(existing).execute("SELECT count(*) FROM t").fetchone()[0] == 6


def test_a_deleted_replica_is_reported_not_served_as_fresh(tmp_path, ext_path, litestream):
    """The replica's folder removed under an open reader: the state it pinned still reads
    (from cache), but the poll says the replica is gone and litestream_lag() grows, instead
    of a healthy-looking reader with lag 0."""
    from harness.data import create_source_db
    src = tmp_path / "src.db"
    create_source_db(src, rows=100, overflow_rows=0)
    root = tmp_path / "replica"
    ls = litestream(src, root.as_uri())
    ls.wait_synced()
    ls.stop()
    c = connect(vfs_uri(root.as_uri(), poll_interval="100ms", poll_interval_max="100ms"),
                ext=ext_path)
    assert c.execute("SELECT count(*) FROM orders").fetchone()[0] == 100
    time.sleep(0.3)
    assert c.execute("SELECT litestream_lag()").fetchone()[0] == 0
    shutil.rmtree(root)

    def poll_error():
        stats = json.loads(c.execute("PRAGMA litestream_stats").fetchone()[0])
        return stats["poll"]["last_error"] or ""
    deadline = time.time() + 10
    while "deleted or replaced" not in poll_error():
        assert time.time() < deadline, poll_error()
        time.sleep(0.05)
    time.sleep(1.2)
    assert c.execute("SELECT litestream_lag()").fetchone()[0] >= 1


def test_a_file_that_overlaps_the_state_it_continues(tmp_path, ext_path):
    """`tests/fixtures/ltx/overlap-primary`: a snapshot of 1-0x74 continued only by a
    level-1 file of 0x73-0x86 (see the fixtures' README). Read, and restored byte for byte,
    as `litestream restore` restores it."""
    root = tmp_path / "replica"
    shutil.copytree(FIXTURES / "overlap-primary" / "replica", root)
    expected = tmp_path / "theirs.db"
    restore(root.as_uri(), expected)
    r = connect(vfs_uri(root.as_uri(), name="overlap.db"), ext=ext_path)
    assert r.execute("SELECT litestream_txid()").fetchone()[0] == "000000000000009a"
    want = sqlite3.connect(expected).execute("SELECT * FROM t ORDER BY id").fetchall()
    assert r.execute("SELECT * FROM t ORDER BY id").fetchall() == want
    ours = tmp_path / "ours.db"
    r.execute("SELECT litestream_restore(?)", (str(ours),)).fetchone()
    assert ours.read_bytes() == expected.read_bytes()


# Loads the extension, then opens argv[2] by its plain name (no URI) and another file beside it.
SERVED_BY_ENV = r"""
import json, sqlite3, sys
ext, served, plain = sys.argv[1:4]
l = sqlite3.connect(":memory:")
l.enable_load_extension(True)
try:
    l.load_extension(ext)
except sqlite3.Error as e:
    print(json.dumps({"load_error": str(e)}))
    sys.exit(0)
rows = sqlite3.connect(served).execute("SELECT count(*), litestream_txid() FROM t").fetchone()
p = sqlite3.connect(plain)
p.execute("CREATE TABLE kv(k)")
p.commit()
print(json.dumps({"rows": list(rows), "plain": p.execute("SELECT count(*) FROM kv").fetchone()[0]}))
"""


def test_litestream_path_serves_a_plain_name_from_the_environment(tmp_path, ext_path):
    """LITESTREAM_PATH with the other LITESTREAM_* variables: that path, opened by its plain
    name, is the replica; every other file is the OS VFS's. A bad variable fails the load,
    naming LITESTREAM_PATH and the variable."""
    import subprocess
    url = copy_replica("v0.5.17-4096", tmp_path).as_uri()
    served, plain = tmp_path / "served.db", tmp_path / "plain.db"

    def run(**env):
        res = subprocess.run([child_python(), "-c", SERVED_BY_ENV, str(ext_path), str(served),
                              str(plain)], capture_output=True, text=True, timeout=60,
                             env=child_env({"LITESTREAM_PATH": served,
                                            "LITESTREAM_REPLICA_URL": url, **env}))
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout.strip().splitlines()[-1])

    r = run()
    assert r == {"rows": [6, "0000000000000004"], "plain": 0}, r
    assert not served.exists(), "a replica leaves no local file"
    r = run(LITESTREAM_POLL_INTERVAL="soon")
    assert "LITESTREAM_PATH" in r["load_error"] and "POLL_INTERVAL" in r["load_error"], r
