"""A database above 1 GiB, read across SQLite's lock page (the page holding byte offset 1 GiB,
which no LTX file contains and which must read as zeros)."""

import hashlib
import pytest

import harness
from harness import Litestream

ROW_BYTES = 1 << 20  # one 1 MiB blob per row: mostly zeros, so LZ4 keeps the replica small
ROWS = 1100  # > 1 GiB of data


def row_blob_sql():
    # 8 distinguishing bytes, then zeros: each row differs, the pages compress well.
    return f"CAST(printf('%08d', i) || zeroblob({ROW_BYTES - 8}) AS BLOB)"


def digest(conn):
    h = hashlib.sha256()
    for i, blob in conn.execute("SELECT id, data FROM big ORDER BY id"):
        h.update(i.to_bytes(8, "big"))
        h.update(hashlib.sha256(blob).digest())
    return h.hexdigest()


@pytest.mark.slow
def test_database_above_1gib_reads_across_lock_page(tmp_path, ext_path):
    src = tmp_path / "big.db"
    w = harness.open_writer(src)
    w.execute("PRAGMA page_size=4096")
    assert w.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    w.execute("CREATE TABLE big(id INTEGER PRIMARY KEY, data BLOB)")
    w.execute("BEGIN")
    w.execute(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < {ROWS}) "
              f"INSERT INTO big(id, data) SELECT i, {row_blob_sql()} FROM n")
    w.execute("COMMIT")
    w.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    replica = f"file://{tmp_path}/replica"
    ls = Litestream(src, replica, workdir=tmp_path).start()
    try:
        ls.wait_synced(timeout=600)
    finally:
        ls.stop()
    # Measured after Litestream ran: it adds tables of its own to the source.
    page_size = 4096
    pages = w.execute("PRAGMA page_count").fetchone()[0]
    lock_pgno = (1 << 30) // page_size + 1
    assert pages * page_size > (1 << 30) and pages > lock_pgno, pages
    expected = digest(w)

    r = harness.connect(harness.vfs_uri(replica, name="big.db"), ext=ext_path)
    assert r.execute("PRAGMA page_count").fetchone()[0] == pages
    # Rows stored after the lock page read back exactly.
    last = r.execute("SELECT data FROM big WHERE id = ?", (ROWS,)).fetchone()[0]
    assert last[:8] == b"%08d" % ROWS and len(last) == ROW_BYTES
    assert digest(r) == expected
    assert r.execute("PRAGMA quick_check").fetchone()[0] == "ok"
