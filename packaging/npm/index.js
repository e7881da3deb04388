// The litestream SQLite extension: a VFS named "litestream" that reads Litestream replicas and
// replicates primaries. As the Go extension's npm package and sqlite-vec do, the library of each
// platform is its own package, sqlite-litestream-<platform>-<arch>, an optional dependency
// of this one whose `os` and `cpu` let npm install only the one that fits. Its file is named
// litestream.<suffix> so that SQLite derives the entry point sqlite3_litestream_init from it.
"use strict";

const SUFFIX = { darwin: "dylib", win32: "dll" }[process.platform] || "so";

/** Absolute path of the extension library for this platform. */
function getLoadablePath() {
  const pkg = `sqlite-litestream-${process.platform}-${process.arch}`;
  try {
    return require.resolve(`${pkg}/litestream.${SUFFIX}`);
  } catch (e) {
    throw new Error(`sqlite-litestream has no library for ${process.platform}-${process.arch}: ` +
      `its optional dependency ${pkg} is not installed (not published for this platform, or ` +
      `installed with --omit=optional)`);
  }
}

/** node-sqlite3's Database: asynchronous, its statements run when it gets to them. */
function isNodeSqlite3(db) {
  return typeof db.serialize === "function" && typeof db.parallelize === "function";
}

/** Loads the extension through `db`: better-sqlite3, bun:sqlite, node:sqlite opened with
 * allowExtension: true (synchronous: the VFS is registered when load returns), or
 * node-sqlite3, whose loadExtension only queues the load: then load returns a Promise that
 * resolves once the VFS is registered (`await load(db)`), or calls `callback`. The VFS is
 * registered for every connection of that SQLite library in this process. */
function load(db, callback) {
  const file = getLoadablePath();
  if (callback !== undefined) return db.loadExtension(file, callback);
  if (!isNodeSqlite3(db)) return db.loadExtension(file);
  return new Promise((resolve, reject) => {
    db.loadExtension(file, (err) => (err ? reject(err) : resolve(db)));
  });
}

/** The URI that opens `path` through the VFS: `file:<path>?vfs=litestream&replica_url=…` and
 * the other parameters of `params` ({ replica_url, poll_interval: "500ms", ... }). Every value
 * is percent-escaped, so a replica URL with its own query or a path with '#', '%' or '?'
 * arrives intact. The VFS must be registered (load) before the first open that names it. */
function uri(path, params = {}) {
  const file = String(path).split("/").map(encodeURIComponent).join("/");
  return `file:${file}?${query({ vfs: "litestream", ...params })}`;
}

/** Serves `path` without a URI, for hosts that pass SQLite plain file names (better-sqlite3,
 * bun:sqlite): from now on, in this process, opening `path` opens the replica (or primary)
 * that `params` describes ({ replica_url, role, ... }), and every other file opens as usual.
 * `db` is a connection the extension was loaded through. Returns the absolute path served;
 * with node-sqlite3, a Promise of it. */
function serve(db, path, params = {}) {
  const sql = "SELECT litestream_serve(?, ?) AS path";
  const args = [String(path), query(params)];
  if (!isNodeSqlite3(db)) return db.prepare(sql).get(...args).path;
  return new Promise((resolve, reject) => {
    db.get(sql, args, (err, row) => (err ? reject(err) : resolve(row.path)));
  });
}

function query(params) {
  return Object.entries(params)
    .filter(([, v]) => v !== undefined && v !== null)
    .map(([k, v]) => `${k}=${encodeURIComponent(String(v))}`)
    .join("&");
}

module.exports = { getLoadablePath, load, uri, serve };
