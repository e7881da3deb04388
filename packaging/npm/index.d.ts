/** Absolute path of the extension library for this platform. */
export function getLoadablePath(): string;
/** Loads the extension through any binding with db.loadExtension(path[, callback]). */
export function load(db: { loadExtension(path: string, ...rest: any[]): any },
                     callback?: (err: Error | null) => void): any;
/** The URI that opens `path` through the VFS, every parameter value percent-escaped. */
export function uri(path: string,
                    params?: { replica_url?: string; [name: string]: string | number | boolean | undefined }): string;
/** Serves `path` without a URI (better-sqlite3, bun:sqlite): opening it opens the replica or
 * primary `params` describe; every other file opens as usual. Returns the absolute path. */
export function serve(db: { prepare(sql: string): { get(...args: any[]): any } }, path: string,
                      params?: { replica_url?: string; [name: string]: string | number | boolean | undefined }): string;
