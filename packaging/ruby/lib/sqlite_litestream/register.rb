# `require "sqlite_litestream/register"` (or `gem "sqlite-litestream", require:
# "sqlite_litestream/register"` in a Gemfile): registers the VFS as it is required, before any
# connection names it.
require_relative "../sqlite_litestream"
SqliteLitestream.register
