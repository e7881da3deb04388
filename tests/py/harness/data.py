"""Source databases and their workload (the `orders` table, writers, Appender) and the
digests that compare databases: rows, index scans, overflow rows, committed images."""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

from harness.common import HarnessError


ORDERS_SCHEMA = """
CREATE TABLE orders (
  id       INTEGER PRIMARY KEY,
  customer TEXT NOT NULL,
  amount   INTEGER NOT NULL,
  note     TEXT,
  payload  BLOB
);
CREATE INDEX orders_customer ON orders(customer, amount);
"""

OVERFLOW_ID_BASE = 1_000_000


def order_row(i: int) -> tuple:
    """Deterministic ordinary row number i (small, no overflow)."""
    return (
        i,
        f"cust{(i * 7919) % 997:04d}",
        (i * 31337) % 100_000,
        f"order {i} " + "x" * (i % 40),
        hashlib.sha256(str(i).encode()).digest()[: 8 + i % 24],
    )


def overflow_row(j: int, page_size: int) -> tuple:
    """Deterministic row whose note and payload are both larger than a page (overflow chains)."""
    rnd = random.Random(j)
    note = (f"overflow {j} " * (3 * page_size // 10 + 1))[: 3 * page_size + j]
    payload = rnd.randbytes(2 * page_size + 1000 + j * 7)
    return (OVERFLOW_ID_BASE + j, f"big{j:04d}", j, note, payload)


def insert_orders(conn: sqlite3.Connection, start: int, count: int) -> None:
    """Inserts order_row(i) for i in [start, start+count) in one transaction."""
    with transaction(conn):
        conn.executemany("INSERT INTO orders VALUES (?,?,?,?,?)",
                         (order_row(i) for i in range(start, start + count)))


def insert_overflow(conn: sqlite3.Connection, start: int, count: int, page_size: int) -> None:
    with transaction(conn):
        conn.executemany("INSERT INTO orders VALUES (?,?,?,?,?)",
                         (overflow_row(j, page_size) for j in range(start, start + count)))


class transaction:
    """`with transaction(conn):` BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error), for
    autocommit (isolation_level=None) connections."""

    def __init__(self, conn: sqlite3.Connection, mode: str = "IMMEDIATE"):
        self.conn, self.mode = conn, mode

    def __enter__(self):
        self.conn.execute(f"BEGIN {self.mode}")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        return False


def open_writer(path: os.PathLike | str) -> sqlite3.Connection:
    """An ordinary autocommit connection to a source database (busy timeout 30 s)."""
    return sqlite3.connect(str(path), isolation_level=None, timeout=30, check_same_thread=False)


class Appender(threading.Thread):
    """Appends order_row(i) in transactions of 7 rows, i contiguous from `start`, pausing
    `pause` seconds between them, until `stop` is set. `next` is the next id to write."""

    def __init__(self, db, start: int, pause: float = 0.1):
        super().__init__(daemon=True)
        self.db, self.next, self.pause = db, start, pause
        self.stop = threading.Event()
        self.error: Optional[Exception] = None

    def run(self):
        conn = open_writer(self.db)
        try:
            while not self.stop.is_set():
                insert_orders(conn, self.next, 7)
                self.next += 7
                time.sleep(self.pause)
        except Exception as e:  # noqa: BLE001
            self.error = e
        finally:
            conn.close()


def create_source_db(path: os.PathLike | str, page_size: int = 4096, rows: int = 2000,
                     overflow_rows: int = 10, auto_vacuum: Optional[str] = None
                     ) -> sqlite3.Connection:
    """Creates a WAL-mode database with the `orders` table (+ index `orders_customer`) holding
    order_row(1..rows) and `overflow_rows` rows larger than a page. Returns an open autocommit
    writer connection."""
    path = Path(path)
    if path.exists():
        raise HarnessError(f"{path} already exists")
    conn = open_writer(path)
    conn.execute(f"PRAGMA page_size={int(page_size)}")
    if auto_vacuum:
        conn.execute(f"PRAGMA auto_vacuum={auto_vacuum}")
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    assert mode == "wal", mode
    conn.executescript(ORDERS_SCHEMA)
    actual = conn.execute("PRAGMA page_size").fetchone()[0]
    assert actual == page_size, (actual, page_size)
    if rows:
        insert_orders(conn, 1, rows)
    if overflow_rows:
        insert_overflow(conn, 0, overflow_rows, page_size)
    return conn


def _row_bytes(row: Sequence) -> bytes:
    return repr(tuple(row)).encode()


def query_digest(conn: sqlite3.Connection, sql: str, params: Sequence = ()) -> str:
    """sha256 over the repr of every result row, in order."""
    h = hashlib.sha256()
    n = 0
    for row in conn.execute(sql, params):
        h.update(_row_bytes(row))
        n += 1
    return f"{n}:{h.hexdigest()}"


def rows_digest(rows: Iterable[Sequence]) -> str:
    """query_digest's format for rows fetched elsewhere (e.g. from a child process)."""
    h = hashlib.sha256()
    n = 0
    for row in rows:
        h.update(_row_bytes(row))
        n += 1
    return f"{n}:{h.hexdigest()}"


def table_digest(conn: sqlite3.Connection, table: str = "orders") -> str:
    """Digest of all rows of `table` in rowid order (count prefixed, e.g. '2010:ab12...')."""
    return query_digest(conn, f'SELECT * FROM "{table}" ORDER BY rowid')


INDEX_RANGE_SQL = ("SELECT customer, amount, id FROM orders INDEXED BY orders_customer "
                   "WHERE customer BETWEEN ? AND ? ORDER BY customer, amount")
OVERFLOW_SQL = f"SELECT id, note, payload FROM orders WHERE id >= {OVERFLOW_ID_BASE} ORDER BY id"


def index_digest(conn: sqlite3.Connection, lo: str = "cust0100", hi: str = "cust0400") -> str:
    """Digest of an index range scan (INDEXED BY orders_customer)."""
    return query_digest(conn, INDEX_RANGE_SQL, (lo, hi))


def overflow_digest(conn: sqlite3.Connection) -> str:
    return query_digest(conn, OVERFLOW_SQL)


def db_digests(conn: sqlite3.Connection) -> dict:
    """The usual set of comparisons between a source and a reader."""
    return {
        "orders": table_digest(conn, "orders"),
        "index": index_digest(conn),
        "overflow": overflow_digest(conn),
    }


def all_tables_digest(conn: sqlite3.Connection) -> dict:
    """{table: table_digest} for every ordinary table (Litestream's _litestream_* included)."""
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    return {n: table_digest(conn, n) for n in names}


def db_image(path: os.PathLike | str) -> bytes:
    """The committed database image of `path` (WAL included), page by page, read in one read
    transaction via sqlite3_serialize. Byte-identical to what `litestream restore` writes."""
    conn = sqlite3.connect(str(path), timeout=30)
    try:
        return conn.serialize()
    finally:
        conn.close()


# Header bytes that may legitimately differ between copies of the same database state:
# 18/19 file format versions (WAL vs rollback), 24..27 change counter, 92..99 version-valid-for
# and SQLite version number.
_MASK = [(18, 20), (24, 28), (92, 100)]


def image_digest(image: bytes) -> str:
    b = bytearray(image)
    for lo, hi in _MASK:
        if len(b) >= hi:
            b[lo:hi] = bytes(hi - lo)
    return f"{len(image)}:{hashlib.sha256(b).hexdigest()}"


def integrity_check(conn: sqlite3.Connection) -> str:
    return "\n".join(r[0] for r in conn.execute("PRAGMA integrity_check"))
