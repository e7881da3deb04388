# Built by packaging/build-all.sh in a staging folder that also holds VERSION (from Cargo.toml)
# and lib/litestream_vfs/litestream.so (the library for the platform this gem is for).
Gem::Specification.new do |s|
  s.name = "sqlite-litestream"
  s.version = File.read(File.join(__dir__, "VERSION")).strip
  s.summary = "SQLite extension: a VFS that reads Litestream replicas"
  s.description = "A VFS named litestream that reads Litestream replicas (LTX files in " \
                  "object storage); LitestreamVFS.load(db) loads it into a sqlite3 connection."
  s.authors = ["litestream extension authors"]
  s.license = "Apache-2.0"
  s.homepage = "https://litestream.io"
  s.required_ruby_version = ">= 2.7"
  # The gem carries a native library: one gem per platform (e.g. x86_64-linux).
  s.platform = Gem::Platform::CURRENT
  s.files = Dir["lib/**/*.rb", "lib/**/litestream.{so,dylib,dll}", "README.md"]
  s.require_paths = ["lib"]
end
