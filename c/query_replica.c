/*
** query_replica: runs one SQL statement against a Litestream replica and prints the rows,
** tab-separated. Links the litestream library directly (see include/litestream.h).
**
**   cc -Iinclude c/query_replica.c -Ltarget/release -llitestream -lsqlite3 -o query_replica
**   LD_LIBRARY_PATH=target/release ./query_replica file:///path/to/replica "SELECT count(*) FROM t"
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "litestream.h"

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s REPLICA_URL SQL\n", argv[0]);
    return 2;
  }
  int rc = litestream_register();
  if (rc != SQLITE_OK) {
    fprintf(stderr, "litestream_register: %s\n", sqlite3_errstr(rc));
    return 1;
  }

  /* The replica URL goes in the URI; '&' inside it must be escaped as %26. */
  char *uri = sqlite3_mprintf("file:replica.db?vfs=litestream&replica_url=%s", argv[1]);
  for (char *p = strstr(uri, "replica_url=") + 12; *p; p++) {
    if (*p == '&') {
      char *escaped = sqlite3_mprintf("%.*s%%26%s", (int)(p - uri), uri, p + 1);
      p = escaped + (p - uri) + 2;
      sqlite3_free(uri);
      uri = escaped;
    }
  }
  sqlite3 *db = 0;
  rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, 0);
  sqlite3_free(uri);
  if (rc != SQLITE_OK) {
    fprintf(stderr, "open: %s\n", sqlite3_errmsg(db));
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
