"""Run by test_packages.py inside a fresh venv that has the sqlite-litestream wheel (and apsw):
    python query_replica.py sqlite3|apsw REPLICA_URL TIME OTHER_DB
Prints JSON: where the library came from, (count, txid) now and at TIME, and the row counts
that a connection opened before the load, and one opened after, see in OTHER_DB. With the
sqlite3 host, also (count, txid) through sqlite_litestream.connect(), called before anything
was loaded."""

import json
import sys

import sqlite_litestream

host, url, when, other_path = sys.argv[1:]
uri = sqlite_litestream.uri("replica.db", url)
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

# connect() loads the extension itself when nothing has yet.
via_connect = None
if host == "sqlite3":
    via_connect = one(sqlite_litestream.connect("replica2.db", url),
                      "SELECT count(*), litestream_txid() FROM t")
sqlite_litestream.load(connect(":memory:"))
# With apsw (its own SQLite), loading into the standard library's sqlite3 too is a second
# SQLite library in this process: refused, with a message.
second_library = None
if host == "apsw":
    import sqlite3
    try:
        sqlite_litestream.load(sqlite3.connect(":memory:"))
        second_library = "loaded"
    except sqlite3.Error as e:
        second_library = str(e)
db = open_replica()
latest = one(db, "SELECT count(*), litestream_txid() FROM t")
db.execute(f"PRAGMA litestream_time = '{when}'")
past = one(db, "SELECT count(*), litestream_txid() FROM t")

other.execute("INSERT INTO kv VALUES ('b', 2)")
print(json.dumps({"path": sqlite_litestream.loadable_path(), "latest": latest, "past": past,
                  "connect": via_connect, "second_library": second_library,
                  "others": [one(other, "SELECT count(*) FROM kv")[0],
                             one(connect(other_path), "SELECT count(*) FROM kv")[0]]}))
