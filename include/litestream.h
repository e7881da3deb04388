/*
** litestream.h: the litestream SQLite extension (a VFS named "litestream" that reads
** Litestream replicas: LTX files in object storage).
**
** Two ways to use it from C:
**
**   1. As a loadable extension, from any host:
**        sqlite3_enable_load_extension(db, 1);
**        sqlite3_load_extension(db, "liblitestream", 0, &err);
**
**   2. Linked into the program (cc app.c -llitestream -lsqlite3):
**        litestream_register();            // once, before opening replicas
**        sqlite3_open_v2("file:app.db?vfs=litestream&replica_url=s3://bucket/app",
**                        &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, 0);
**
** Configuration is by URI parameters (replica_url, poll_interval, cache_size, open_timeout)
** or the LITESTREAM_<NAME> environment variables; see README.md.
*/
#ifndef LITESTREAM_H
#define LITESTREAM_H

#include <sqlite3.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The extension entry point: registers the "litestream" VFS (once per process, never as
** the default VFS) and the litestream_* SQL functions. Returns SQLITE_OK_LOAD_PERMANENTLY. */
int sqlite3_litestream_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi);

/* The Go extension's entry point name, kept so that its loaders keep working. */
int sqlite3_litestreamvfs_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi);

/* The automatic extension: registers the VFS and the SQL functions on each connection as it
** opens, and fails the open of a replica that could not be opened, with the reason in
** sqlite3_errmsg. Returns SQLITE_OK for every other connection. Register this one with
** sqlite3_auto_extension(), never the entry point above. */
int sqlite3_litestream_autoinit(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi);

/* For programs that link the library: registers the automatic extension, so every connection
** opened afterwards gets the VFS and the SQL functions. (A program linked against libsqlite3
** has no sqlite3_api_routines pointer of its own; SQLite passes one to automatic
** extensions.) */
static inline int litestream_register(void) {
  sqlite3 *db = 0;
  int rc = sqlite3_auto_extension((void (*)(void))sqlite3_litestream_autoinit);
  if (rc != SQLITE_OK) return rc;
  /* Opening any connection runs the automatic extension, which registers the VFS. */
  rc = sqlite3_open(":memory:", &db);
  sqlite3_close(db);
  return rc;
}

#ifdef __cplusplus
}
#endif

#endif /* LITESTREAM_H */
