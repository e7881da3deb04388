// Run by test_packages.py in a fresh folder where the sqlite-litestream .tgz was installed:
//   node query_replica.js REPLICA_URL TIME OTHER_DB      (sqlite3, node-sqlite3, via NODE_PATH)
// Prints the same JSON as query_replica.py.
"use strict";
const sqlite3 = require("sqlite3");
const litestream = require("sqlite-litestream");

const [url, when, otherPath] = process.argv.slice(2);
const open = (name, mode) => new Promise((resolve, reject) => {
  const db = new sqlite3.Database(name, mode, (err) => (err ? reject(err) : resolve(db)));
});
const all = (db, sql) => new Promise((resolve, reject) => {
  db.all(sql, (err, rows) => (err ? reject(err) : resolve(rows)));
});
const one = async (db, sql) => Object.values((await all(db, sql))[0]);

(async () => {
  // An ordinary connection opened (and used) before the extension is loaded.
  const rw = sqlite3.OPEN_READWRITE | sqlite3.OPEN_CREATE;
  const other = await open(otherPath, rw);
  await all(other, "CREATE TABLE kv(k, v)");
  await all(other, "INSERT INTO kv VALUES ('a', 1)");

  const loader = await open(":memory:", rw);
  // node-sqlite3 queues the load: awaited, the VFS is registered when it resolves.
  await litestream.load(loader);
  const db = await open(litestream.uri("replica.db", { replica_url: url }),
                        sqlite3.OPEN_READONLY | sqlite3.OPEN_URI);
  const latest = await one(db, "SELECT count(*), litestream_txid() FROM t");
  await all(db, `PRAGMA litestream_time = '${when}'`);
  const past = await one(db, "SELECT count(*), litestream_txid() FROM t");

  // A served path, opened by its plain name.
  const servedPath = await litestream.serve(loader, "served.db", { replica_url: url });
  const served = await one(await open("served.db", sqlite3.OPEN_READONLY),
                           "SELECT count(*), litestream_txid() FROM t");

  await all(other, "INSERT INTO kv VALUES ('b', 2)");
  const others = [(await one(other, "SELECT count(*) FROM kv"))[0],
                  (await one(await open(otherPath, rw), "SELECT count(*) FROM kv"))[0]];
  console.log(JSON.stringify({ path: litestream.getLoadablePath(), latest, past, others,
                              servedPath, served }));
})().catch((err) => { console.error(err); process.exit(1); });
