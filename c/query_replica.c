/*
** query_replica: runs one SQL statement against a Litestream replica and prints the rows,
** tab-separated. Links the litestream library directly (see include/litestream.h); with a
** third argument it reads the replica as it was at that instant (time travel).
**
**   cc -Iinclude c/query_replica.c -Ltarget/release -llitestream -lsqlite3 -o query_replica
**   LD_LIBRARY_PATH=target/release ./query_replica file:///path/to/replica "SELECT count(*) FROM t"
**   LD_LIBRARY_PATH=target/release ./query_replica s3://bkt/app "SELECT ..." 2026-11-21T09:30:00Z
**
** Restores report their progress on stderr ("SELECT litestream_restore('/tmp/copy.db')");
** with QUERY_REPLICA_STOP_AT=<bytes> in the environment, a restore is cancelled once that
** much is done. The extension's log (LITESTREAM_LOG_LEVEL=info for more) arrives through
** SQLite's own logger, as any host's logging can take it: here it goes to stderr as
** "log(<code>): <line>".
*/
#include <stdio.h>
#include <stdlib.h>

#include "litestream.h"

static int progress(void *stop_at, const char *what, sqlite3_uint64 done,
                    sqlite3_uint64 total) {
  fprintf(stderr, "progress: %s %llu/%llu\n", what, (unsigned long long)done,
          (unsigned long long)total);
  return stop_at && done >= *(sqlite3_uint64 *)stop_at;
}

static void logger(void *unused, int code, const char *line) {
  (void)unused;
  fprintf(stderr, "log(%d): %s\n", code, line);
}

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: %s REPLICA_URL SQL [TIME]\n", argv[0]);
    return 2;
  }
  /* Before SQLite is initialised: where sqlite3_log, and so the extension's log, goes. */
  sqlite3_config(SQLITE_CONFIG_LOG, logger, (void *)0);
  const char *stop = getenv("QUERY_REPLICA_STOP_AT");
  static sqlite3_uint64 stop_at;
  if (stop) stop_at = strtoull(stop, 0, 10);
  litestream_set_progress(progress, stop ? &stop_at : 0);
  /* litestream_open registers the VFS and escapes the values into the URI. */
  litestream_config cfg = {.replica_url = argv[1], .time = argc == 4 ? argv[3] : 0};
  sqlite3 *db = 0;
  int rc = litestream_open(&cfg, &db, SQLITE_OPEN_READONLY);
  if (rc != SQLITE_OK) {
    fprintf(stderr, "open: %s\n", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close(db);
    return 1;
  }
  sqlite3_stmt *stmt = 0;
  rc = sqlite3_prepare_v2(db, argv[2], -1, &stmt, 0);
  if (rc == SQLITE_OK) rc = sqlite3_step(stmt);
  for (; rc == SQLITE_ROW; rc = sqlite3_step(stmt)) {
    for (int i = 0; i < sqlite3_column_count(stmt); i++) {
      const unsigned char *v = sqlite3_column_text(stmt, i);
      printf("%s%s", i ? "\t" : "", v ? (const char *)v : "NULL");
    }
    printf("\n");
  }
  int ok = rc == SQLITE_DONE;
  if (!ok) fprintf(stderr, "query: %s\n", sqlite3_errmsg(db));
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return ok ? 0 : 1;
}
