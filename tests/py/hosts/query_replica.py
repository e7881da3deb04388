"""Run by test_packages.py inside a fresh venv that has the sqlite-litestream wheel (and apsw):
    python query_replica.py sqlite3|apsw REPLICA_URL TIME OTHER_DB
Prints JSON: where the library came from, (count, txid) now and at TIME, and the row counts
that a connection opened before the load, and one opened after, see in OTHER_DB."""

import json
import sys
import urllib.parse

import sqlite_litestream

host, url, when, other_path = sys.argv[1:]
uri = f"file:replica.db?vfs=litestream&replica_url={urllib.parse.quote(url, safe='')}"
if host == "sqlite3":
    import sqlite3 as lib

    def connect(name, **kw):
        return lib.connect(name, isolation_level=None, **kw)

    def open_replica():
        return lib.connect(uri, uri=True)
else:
    import apsw as lib

    def connect(name):
        return lib.Connection(name)

    def open_replica():
        return lib.Connection(uri, flags=lib.SQLITE_OPEN_READONLY | lib.SQLITE_OPEN_URI)


def one(conn, sql):
    return list(list(conn.execute(sql))[0])


# An ordinary connection opened (and used) before the extension is loaded.
other = connect(other_path)
other.execute("CREATE TABLE kv(k, v)")
other.execute("INSERT INTO kv VALUES ('a', 1)")

sqlite_litestream.load(connect(":memory:"))
db = open_replica()
latest = one(db, "SELECT count(*), litestream_txid() FROM t")
db.execute(f"PRAGMA litestream_time = '{when}'")
past = one(db, "SELECT count(*), litestream_txid() FROM t")

other.execute("INSERT INTO kv VALUES ('b', 2)")
print(json.dumps({"path": sqlite_litestream.loadable_path(), "latest": latest, "past": past,
                  "others": [one(other, "SELECT count(*) FROM kv")[0],
                             one(connect(other_path), "SELECT count(*) FROM kv")[0]]}))
