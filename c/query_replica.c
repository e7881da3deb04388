/*
** query_replica: runs one SQL statement against a Litestream replica and prints the rows,
** tab-separated. Links the litestream library directly (see include/litestream.h); with a
** third argument it reads the replica as it was at that instant (time travel).
**
**   cc -Iinclude c/query_replica.c -Ltarget/release -llitestream -lsqlite3 -o query_replica
**   LD_LIBRARY_PATH=target/release ./query_replica file:///path/to/replica "SELECT count(*) FROM t"
**   LD_LIBRARY_PATH=target/release ./query_replica s3://bkt/app "SELECT ..." 2026-11-21T09:30:00Z
*/
#include <stdio.h>

#include "litestream.h"

int main(int argc, char **argv) {
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: %s REPLICA_URL SQL [TIME]\n", argv[0]);
    return 2;
  }
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
