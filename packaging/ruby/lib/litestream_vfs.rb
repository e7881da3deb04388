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

  # Loads the extension through db (a SQLite3::Database); the VFS is then registered for every
  # connection in this process. Extension loading is switched off again afterwards.
  def self.load(db)
    db.enable_load_extension(true)
    db.load_extension(loadable_path)
  ensure
    db.enable_load_extension(false)
  end
end
