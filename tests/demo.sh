#!/usr/bin/env bash
# The read-replica demo: builds the extension, makes a local database, replicates it to a
# file:// replica with the real Litestream, and queries the replica through the VFS from
# the sqlite3 shell while the writer goes on. No cloud account needed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/tests/setup.sh"
LITESTREAM="$ROOT/tests/.work/venv/bin/litestream"
EXT="$ROOT/target/release/liblitestream"
DEMO="$ROOT/tests/.work/demo"
rm -rf "$DEMO" && mkdir -p "$DEMO"
cd "$DEMO"

echo "== 1. a local database: app.db (WAL mode, 10,000 orders)"
sqlite3 app.db <<'SQL'
PRAGMA journal_mode=WAL;
CREATE TABLE orders(id INTEGER PRIMARY KEY, customer TEXT, amount INTEGER);
CREATE INDEX orders_customer ON orders(customer);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 10000)
INSERT INTO orders(customer, amount) SELECT 'customer-' || (i % 97), i * 3 FROM n;
SQL

echo "== 2. the real Litestream replicates it to file://$DEMO/replica"
cat > litestream.yml <<YAML
dbs:
  - path: $DEMO/app.db
    replica:
      url: file://$DEMO/replica
      sync-interval: 100ms
YAML
"$LITESTREAM" replicate -config litestream.yml > litestream.log 2>&1 &
LS_PID=$!
trap 'kill $LS_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  compgen -G "replica/ltx/0/*.ltx" >/dev/null && break
  sleep 0.1
done
sleep 1

URI="file:app.db?vfs=litestream&replica_url=file://$DEMO/replica&poll_interval=200ms"
query() {
  sqlite3 -bail -cmd ".load $EXT" -cmd ".open '$URI'" ":memory:" "$1"
}
echo "== 3. query the replica through the VFS: $URI"
query "SELECT count(*) AS orders, sum(amount) AS total, litestream_txid() AS txid FROM orders;"
query "SELECT customer, count(*) FROM orders WHERE customer BETWEEN 'customer-10' AND 'customer-12' GROUP BY 1;"

echo "== 4. the writer goes on; the replica follows"
sqlite3 app.db "INSERT INTO orders(customer, amount) VALUES ('late-customer', 42);"
for _ in $(seq 50); do
  n=$(query "SELECT count(*) FROM orders;")
  [[ "$n" == 10001 ]] && break
  sleep 0.2
done
query "SELECT count(*) AS orders, litestream_txid() AS txid, litestream_lag() AS lag_s FROM orders;"
query "PRAGMA litestream_stats;"
echo "== demo done"
