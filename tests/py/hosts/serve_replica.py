"""Run by test_packages.py inside a fresh venv that has the sqlite-litestream wheel:
    python serve_replica.py REPLICA_URL WORKDIR
The ways to reach the VFS without loading it on a connection of one's own: `import
sqlite_litestream.register` before the first open that names it, and serve() for code that
opens plain file names. Prints JSON: (count, txid) through each, and what a plain database
opened beside them holds."""

import json
import os
import sqlite3
import sys

import sqlite_litestream.register  # noqa: F401  (registers the VFS at import)
import sqlite_litestream

url, workdir = sys.argv[1:]
os.chdir(workdir)


def one(conn, sql):
    return list(conn.execute(sql).fetchone())


by_uri = one(sqlite3.connect(sqlite_litestream.uri("replica.db", url), uri=True),
             "SELECT count(*), litestream_txid() FROM t")
served_path = sqlite_litestream.serve("served.db", url, poll_interval="500ms")
served = one(sqlite3.connect("served.db"), "SELECT count(*), litestream_txid() FROM t")
# Every other file is the OS VFS's, as before.
plain = sqlite3.connect("plain.db")
plain.execute("CREATE TABLE kv(k)")
plain.execute("INSERT INTO kv VALUES (1)")
plain.commit()
try:
    sqlite_litestream.serve("bad.db", url, poll_interval="soon")
    bad = None
except sqlite3.Error as e:
    bad = str(e)
print(json.dumps({"by_uri": by_uri, "served": served, "served_path": served_path,
                  "plain": one(sqlite3.connect("plain.db"), "SELECT count(*) FROM kv"),
                  "plain_exists": os.path.getsize("plain.db") > 0, "bad": bad}))
