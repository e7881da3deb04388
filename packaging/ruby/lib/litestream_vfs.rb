# The litestream SQLite extension: a VFS named "litestream" that reads Litestream replicas.
#
#   require "sqlite3"
#   require "litestream_vfs"
#   LitestreamVFS.load(SQLite3::Database.new(":memory:"))   # registers the VFS process-wide
module LitestreamVFS
  # Path of the bundled library without its suffix: SQLite adds .so/.dylib and derives the
  # entry point sqlite3_litestream_init from the file name.
  def self.loadable_path
    File.expand_path("litestream_vfs/litestream", __dir__)
  end

  # The URI that opens path through the VFS: "file:<path>?vfs=litestream&replica_url=…" and
  # the other parameters (poll_interval: "500ms", ...). Every value is percent-escaped, so a
  # replica URL with its own query or a path with '#', '%' or '?' arrives intact. Open it
  # with SQLite3::Constants::Open::URI; the VFS must be loaded before.
  def self.uri(path, params = {})
    escape = ->(v) { v.to_s.b.gsub(/[^A-Za-z0-9\-._~:\/@]/) { |c| format("%%%02X", c.ord) } }
    query = [["vfs", "litestream"]] + params.reject { |_, v| v.nil? }.to_a
    "file:#{escape.(path)}?" + query.map { |k, v| "#{k}=#{escape.(v)}" }.join("&")
  end

  # Loads the extension through db (a SQLite3::Database); the VFS is then registered for every
  # connection in this process. Extension loading is switched off again afterwards.
  def self.load(db)
    db.enable_load_extension(true)
    db.load_extension(loadable_path)
  ensure
    db.enable_load_extension(false)
  end
end
