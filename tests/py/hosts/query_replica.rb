# Run by test_packages.py with GEM_PATH set to where the sqlite-litestream gem was installed:
#   ruby query_replica.rb REPLICA_URL TIME OTHER_DB        (Debian's ruby-sqlite3)
# Prints the same JSON as query_replica.py.
require "json"
require "sqlite3"
require "sqlite_litestream"

url, time, other_path = ARGV

# An ordinary connection opened (and used) before the extension is loaded.
other = SQLite3::Database.new(other_path)
other.execute("CREATE TABLE kv(k, v)")
other.execute("INSERT INTO kv VALUES ('a', 1)")

# Code written for the Go extension's gem (LitestreamVfs) runs unchanged.
LitestreamVfs.load(SQLite3::Database.new(":memory:"))
open = SQLite3::Constants::Open
db = SQLite3::Database.new(SqliteLitestream.uri("replica.db", replica_url: url),
                           flags: open::READONLY | open::URI)
latest = db.execute("SELECT count(*), litestream_txid() FROM t").first
db.execute("PRAGMA litestream_time = '#{time}'")
past = db.execute("SELECT count(*), litestream_txid() FROM t").first

other.execute("INSERT INTO kv VALUES ('b', 2)")
others = [other.get_first_value("SELECT count(*) FROM kv"),
          SQLite3::Database.new(other_path).get_first_value("SELECT count(*) FROM kv")]
puts JSON.generate({ path: SqliteLitestream.loadable_path, latest: latest, past: past, others: others })
