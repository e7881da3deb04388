# Bundler.require finds a gem named "sqlite-litestream" here (its name with "-" as "/").
require_relative "../sqlite_litestream"
