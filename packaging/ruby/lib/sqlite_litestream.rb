# `require "sqlite_litestream"` (the gem's name) and `require "litestream_vfs"` are the same.
require_relative "litestream_vfs"
