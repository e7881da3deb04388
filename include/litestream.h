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
**      or, with the URI built and escaped for you:
**        litestream_config cfg = {.replica_url = "s3://bucket/app", .poll_interval = "500ms"};
**        litestream_open(&cfg, &db, 0);    // registers the VFS first if needed
**
** Configuration is by URI parameters (replica_url, poll_interval, cache_size, open_timeout)
** or the LITESTREAM_<NAME> environment variables; see README.md.
*/
#ifndef LITESTREAM_H
#define LITESTREAM_H

#include <sqlite3.h>
#include <string.h>

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

/* Progress of cold starts (litestream_restore(), a primary's restore at open, hydration), for
** programs that link the library: `cb` is called after each part fetched, from the thread
** doing the work, with what runs ("restore <path>" or "hydration"), the bytes done and the
** total. Returning non-zero cancels: a restore then fails with SQLITE_INTERRUPT and leaves
** nothing under its target name. One callback per process; NULL removes it. The same
** figures are in litestream_stats()' "restore" object, for any connection to poll. */
typedef int (*litestream_progress_fn)(void *ctx, const char *what, sqlite3_uint64 done,
                                      sqlite3_uint64 total);
void litestream_set_progress(litestream_progress_fn cb, void *ctx);

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

/* What litestream_uri() and litestream_open() put into the URI. NULL fields are left out, so
** the LITESTREAM_<NAME> environment variable or the default applies (see README.md). Values
** are given as they are documented there (e.g. poll_interval "500ms", cache_size "64MB", time
** "2026-11-21T09:30:00Z"); they are escaped for the URI here. */
typedef struct litestream_config {
  const char *replica_url; /* file:///abs/path, s3://bucket/prefix?endpoint=..., gs://... */
  const char *poll_interval;
  const char *cache_size;
  const char *open_timeout;
  const char *time; /* open looking at the state at this instant (read-only) */
  const char *log_level;
} litestream_config;

/* Appends "&name=value" with value percent-escaped where SQLite's URI parser would otherwise
** cut or change it ('&', '#', '%', '=', '?'), and escapes spaces, controls and non-ASCII bytes
** too so the URI stays one printable token. */
static inline void litestream__uri_param(sqlite3_str *s, const char *name, const char *value) {
  if (!value) return;
  sqlite3_str_appendf(s, "&%s=", name);
  for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
    if (*p <= ' ' || *p >= 0x7f || strchr("%&#=?", *p)) {
      sqlite3_str_appendf(s, "%%%02X", *p);
    } else {
      sqlite3_str_appendchar(s, 1, (char)*p);
    }
  }
}

/* The URI that opens cfg's replica through the litestream VFS, e.g.
** "file:replica.db?vfs=litestream&replica_url=s3://bkt/app?endpoint=http://h:9000%26x=y".
** Returns a string to release with sqlite3_free(), or NULL when out of memory. */
static inline char *litestream_uri(const litestream_config *cfg) {
  sqlite3_str *s = sqlite3_str_new(0);
  sqlite3_str_appendall(s, "file:replica.db?vfs=litestream");
  litestream__uri_param(s, "replica_url", cfg->replica_url);
  litestream__uri_param(s, "poll_interval", cfg->poll_interval);
  litestream__uri_param(s, "cache_size", cfg->cache_size);
  litestream__uri_param(s, "open_timeout", cfg->open_timeout);
  litestream__uri_param(s, "time", cfg->time);
  litestream__uri_param(s, "log_level", cfg->log_level);
  return sqlite3_str_finish(s);
}

/* Opens cfg's replica: sqlite3_open_v2(litestream_uri(cfg), db, flags | SQLITE_OPEN_URI),
** with flags 0 meaning SQLITE_OPEN_READONLY. Registers the VFS first (litestream_register)
** unless it is already registered, e.g. by loading the extension. As with sqlite3_open_v2,
** *db is set even on failure (for sqlite3_errmsg) and must be closed with sqlite3_close. */
static inline int litestream_open(const litestream_config *cfg, sqlite3 **db, int flags) {
  *db = 0;
  if (!sqlite3_vfs_find("litestream")) {
    int rc = litestream_register();
    if (rc != SQLITE_OK) return rc;
  }
  char *uri = litestream_uri(cfg);
  if (!uri) return SQLITE_NOMEM;
  int rc = sqlite3_open_v2(uri, db, (flags ? flags : SQLITE_OPEN_READONLY) | SQLITE_OPEN_URI, 0);
  sqlite3_free(uri);
  return rc;
}

#ifdef __cplusplus
}
#endif

#endif /* LITESTREAM_H */
