# The litestream SQLite extension: a VFS named "litestream" that reads Litestream replicas and
# replicates primaries, for the sqlite3 gem.
#
#   require "sqlite_litestream/register"          # the VFS exists before any open names it
#   db = SQLite3::Database.new(SqliteLitestream.uri("app.db", replica_url: "s3://bucket/app"),
#                              flags: SQLite3::Constants::Open::READONLY | SQLite3::Constants::Open::URI)
#
# In a Rails application the gem registers the VFS as it boots (see sqlite_litestream/railtie).
require "sqlite3"

module SqliteLitestream
  # Path of the bundled library without its suffix: SQLite adds .so/.dylib and derives the
  # entry point sqlite3_litestream_init from the file name.
  def self.loadable_path
    File.expand_path("sqlite_litestream/litestream", __dir__)
  end

  # For hosts that take a library as anything answering to_path (sqlite3 gem 2.4 and later's
  # load_extension, Rails 8's `extensions:` in database.yml).
  def self.to_path
    loadable_path
  end

  # The URI that opens path through the VFS: "file:<path>?vfs=litestream&replica_url=…" and
  # the other parameters (poll_interval: "500ms", ...). Every value is percent-escaped, so a
  # replica URL with its own query or a path with '#', '%' or '?' arrives intact. Open it
  # with SQLite3::Constants::Open::URI; the VFS must be registered before.
  def self.uri(path, params = {})
    query = [["vfs", "litestream"]] + params.reject { |_, v| v.nil? }.to_a
    "file:#{escape(path, "/")}?" + query.map { |k, v| "#{k}=#{escape(v, ":/@")}" }.join("&")
  end

  # Loads the extension through db (a SQLite3::Database); the VFS is then registered for every
  # connection in this process. Extension loading is switched off again afterwards.
  def self.load(db)
    db.enable_load_extension(true)
    db.load_extension(loadable_path)
  ensure
    db.enable_load_extension(false)
  end

  @loader = nil
  @lock = Mutex.new

  # Registers the VFS in this process, once, without a connection of the caller's: before the
  # first open that names it (an initializer, the top of a script). Returns the connection
  # that loaded it, kept open: loading is per process, but a connection must do it.
  def self.register
    @lock.synchronize do
      @loader ||= SQLite3::Database.new(":memory:").tap { |db| load(db) }
    end
  end

  # Serves path without a URI, for code that opens plain file names (ActiveRecord's
  # `database:`, a library you cannot change): from now on, in this process, opening path
  # opens the replica (or, with role: "primary", the primary) these parameters describe;
  # every other file opens as usual. Returns the absolute path served.
  def self.serve(path, params = {})
    encoded = params.reject { |_, v| v.nil? }.map { |k, v| "#{k}=#{escape(v, "")}" }.join("&")
    register.get_first_value("SELECT litestream_serve(?, ?)", [path.to_s, encoded])
  end

  def self.escape(value, safe)
    value.to_s.b.gsub(/[^A-Za-z0-9\-._~#{Regexp.escape(safe)}]/n) { |c| format("%%%02X", c.ord) }
  end
  private_class_method :escape
end

# The Go extension's gem names its module LitestreamVfs, with the same load(db) and
# loadable_path: code written for it runs unchanged once it requires this gem instead.
LitestreamVfs = SqliteLitestream unless defined?(LitestreamVfs)

require_relative "sqlite_litestream/railtie" if defined?(Rails::Railtie)
