// The litestream SQLite extension: a VFS named "litestream" that reads Litestream replicas.
// The package carries one library per platform in lib/<platform>-<arch>/ (packaging/build-all.sh
// puts in the one it built); each is named litestream.<suffix> so that SQLite derives the entry
// point sqlite3_litestream_init from the file name.
"use strict";

const fs = require("fs");
const path = require("path");

const SUFFIX = { darwin: "dylib", win32: "dll" }[process.platform] || "so";

/** Absolute path of the extension library for this platform. */
function getLoadablePath() {
  const dir = path.join(__dirname, "lib", `${process.platform}-${process.arch}`);
  const file = path.join(dir, `litestream.${SUFFIX}`);
  if (!fs.existsSync(file)) {
    throw new Error(`sqlite-litestream has no library for ${process.platform}-${process.arch} ` +
      `(looked for ${file})`);
  }
  return file;
}

/** Loads the extension through `db` (better-sqlite3, node-sqlite3, node:sqlite opened with
 * allowExtension: true, ...: anything with db.loadExtension(path)). The VFS is then
 * registered for every connection of that SQLite library in this process. Returns whatever
 * loadExtension returns; node-sqlite3's callback may be passed as `callback`. */
function load(db, callback) {
  return callback === undefined
    ? db.loadExtension(getLoadablePath())
    : db.loadExtension(getLoadablePath(), callback);
}

/** The URI that opens `path` through the VFS: `file:<path>?vfs=litestream&replica_url=…` and
 * the other parameters of `params` ({ replica_url, poll_interval: "500ms", ... }). Every value
 * is percent-escaped, so a replica URL with its own query or a path with '#', '%' or '?'
 * arrives intact. The VFS must be registered (load) before the first open that names it. */
function uri(path, params = {}) {
  const query = [["vfs", "litestream"], ...Object.entries(params)]
    .filter(([, v]) => v !== undefined && v !== null)
    .map(([k, v]) => `${k}=${encodeURIComponent(String(v))}`);
  const file = String(path).split("/").map(encodeURIComponent).join("/");
  return `file:${file}?${query.join("&")}`;
}

/** Serves `path` without a URI, for hosts that pass SQLite plain file names (better-sqlite3,
 * bun:sqlite): from now on, in this process, opening `path` opens the replica (or primary)
 * that `params` describes ({ replica_url, role, ... }), and every other file opens as usual.
 * `db` is a connection the extension was loaded through, with a synchronous
 * prepare().get() (better-sqlite3, node:sqlite); with node-sqlite3 run
 * `SELECT litestream_serve(?, ?)` yourself and wait for it. Returns the absolute path served. */
function serve(db, path, params = {}) {
  const query = Object.entries(params)
    .filter(([, v]) => v !== undefined && v !== null)
    .map(([k, v]) => `${k}=${encodeURIComponent(String(v))}`)
    .join("&");
  const row = db.prepare("SELECT litestream_serve(?, ?) AS path").get(String(path), query);
  return row.path;
}

module.exports = { getLoadablePath, load, uri, serve };
