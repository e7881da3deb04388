// Run by test_packages.py in a fresh folder where the sqlite-litestream .tgz was installed:
//   node plain_names.js REPLICA_URL PRIMARY_REPLICA_URL WORKDIR   (better-sqlite3 via NODE_PATH)
//   bun plain_names.js REPLICA_URL PRIMARY_REPLICA_URL WORKDIR    (bun:sqlite)
// better-sqlite3 and bun:sqlite pass SQLite plain file names (no URI), so the VFS cannot be
// named: serve() makes these paths a replica and a primary, and every other file opens as
// usual. Both have the same synchronous API for what is used here. Prints JSON: rows of the
// replica (read-only and read-write opens), what the primary wrote, and a plain database
// beside them.
"use strict";
const Database = process.versions.bun ? require("bun:sqlite").Database : require("better-sqlite3");
const litestream = require("sqlite-litestream");

const [url, primaryUrl, workdir] = process.argv.slice(2);
process.chdir(workdir);
const loader = new Database(":memory:");
litestream.load(loader);
const servedPath = litestream.serve(loader, "replica.db", { replica_url: url });
litestream.serve(loader, "app.db", { replica_url: primaryUrl, role: "primary", sync: "remote" });

const row = (db, sql) => Object.values(db.prepare(sql).get());
const readonly = row(new Database("replica.db", { readonly: true }),
                     "SELECT count(*), litestream_txid() FROM t");
const readwrite = row(new Database("replica.db"), "SELECT count(*), litestream_txid() FROM t");

const app = new Database("app.db");
app.exec("CREATE TABLE IF NOT EXISTS w(x)");
const insert = app.prepare("INSERT INTO w VALUES (?)");
for (let i = 0; i < 10; i++) insert.run(i);  // sync=remote: each in the replica on return
const shipped = row(app, "SELECT count(*), litestream_txid() FROM w");
app.close();

const plain = new Database("plain.db");
plain.exec("CREATE TABLE kv(k); INSERT INTO kv VALUES (1)");
let bad = null;
try {
  litestream.serve(loader, "bad.db", { replica_url: url, poll_interval: "soon" });
} catch (e) {
  bad = e.message;
}
console.log(JSON.stringify({ host: process.versions.bun ? "bun" : "node", servedPath, readonly, readwrite, shipped,
                             plain: row(plain, "SELECT count(*) FROM kv"), bad }));
