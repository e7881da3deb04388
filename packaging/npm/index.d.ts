type Params = { replica_url?: string; [name: string]: string | number | boolean | undefined };
/** Absolute path of the extension library for this platform. */
export function getLoadablePath(): string;
/** Loads the extension through any binding with db.loadExtension(path[, callback]):
 * synchronous for better-sqlite3, bun:sqlite and node:sqlite; a Promise (or the callback) for
 * node-sqlite3, settled once the VFS is registered. */
export function load<D extends { loadExtension(path: string, ...rest: any[]): any }>(
  db: D, callback?: (err: Error | null) => void): any;
/** The URI that opens `path` through the VFS, every parameter value percent-escaped. */
export function uri(path: string, params?: Params): string;
/** Serves `path` without a URI (better-sqlite3, bun:sqlite): opening it opens the replica or
 * primary `params` describe; every other file opens as usual. Returns the absolute path
 * (a Promise of it with node-sqlite3). */
export function serve(db: any, path: string, params?: Params): string | Promise<string>;
