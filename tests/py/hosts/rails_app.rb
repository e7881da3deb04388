# Run by test_packages.py with GEM_PATH set to where the sqlite-litestream gem was installed
# and Debian's railties and activerecord beside it:
#   ruby rails_app.rb WORKDIR PRIMARY_REPLICA_URL LEGACY_REPLICA_URL
# A Rails application as the gem's README sets one up: Bundler.require loads the gem, whose
# Railtie registers the VFS before the application's initializers run and Active Record
# connects; config/initializers/litestream.rb serves the database.yml paths; writes go to the
# primary (shipping under sync=remote), reads to the replica role; a replica written by the
# real Litestream is named in database.yml by URI. Prints JSON.
require "json"

workdir, primary_url, legacy_url = ARGV
require "sqlite3"
require "erb"
Dir.chdir(workdir)
File.write("Gemfile", <<~GEMFILE)
  source "https://rubygems.org"
  gem "railties"
  gem "activerecord"
  gem "sqlite3"
  gem "sqlite-litestream"
GEMFILE
Dir.mkdir("config") unless Dir.exist?("config")
Dir.mkdir("config/initializers") unless Dir.exist?("config/initializers")
File.write("config/database.yml", <<~YAML)
  production:
    primary:
      adapter: sqlite3
      database: app.db
    primary_replica:
      adapter: sqlite3
      database: app-replica.db
      replica: true
    legacy:
      adapter: sqlite3
      database: "file:legacy.db?vfs=litestream&replica_url=#{ERB::Util.url_encode(legacy_url)}"
      flags: #{SQLite3::Constants::Open::READONLY | SQLite3::Constants::Open::URI}
      database_tasks: false
YAML
File.write("config/initializers/litestream.rb", <<~RUBY)
  $registered_first = !SqliteLitestream.instance_variable_get(:@loader).nil?
  SqliteLitestream.serve(Rails.root.join("app.db"), replica_url: ENV.fetch("PRIMARY_REPLICA_URL"),
                         role: "primary", sync: "remote")
  SqliteLitestream.serve(Rails.root.join("app-replica.db"), replica_url: ENV.fetch("PRIMARY_REPLICA_URL"),
                         poll_interval: "100ms")
RUBY
ENV["PRIMARY_REPLICA_URL"] = primary_url
ENV["RAILS_ENV"] = "production"
ENV["BUNDLE_GEMFILE"] = File.join(workdir, "Gemfile")

require "bundler/setup"
require "rails"
require "active_record/railtie"
Bundler.require(:default)

class LitestreamApp < Rails::Application
  config.root = Dir.pwd
  config.eager_load = false
  config.logger = Logger.new($stderr)
  config.log_level = :warn
  config.secret_key_base = "test"
  config.active_support.deprecation = :silence
end
Rails.application.initialize!

class ApplicationRecord < ActiveRecord::Base
  self.abstract_class = true
  connects_to database: { writing: :primary, reading: :primary_replica }
end

class Note < ApplicationRecord
end

class Legacy < ActiveRecord::Base
  self.table_name = "t"
  establish_connection :legacy
end

out = { registered_by_railtie: $registered_first,
        legacy: [Legacy.count, Legacy.connection.select_value("SELECT litestream_txid()")] }
ActiveRecord::Base.connected_to(role: :writing) do
  ActiveRecord::Base.connection.create_table(:notes) { |t| t.text :text }
  Note.transaction { 5.times { |i| Note.create!(text: "note #{i}") } }
end
deadline = Time.now + 20
seen = -1
loop do
  ActiveRecord::Base.connected_to(role: :reading) do
    seen = begin
      Note.count
    rescue ActiveRecord::StatementInvalid # the table has not reached the replica yet
      -1
    end
    out[:replica_first] = Note.order(:id).first&.text if seen == 5
    out[:replica_txid] = Note.connection.select_value("SELECT litestream_txid()") if seen == 5
  end
  break if seen == 5 || Time.now > deadline
  sleep 0.1
end
out[:replica_count] = seen
out[:peer_name] = LitestreamVfs.equal?(SqliteLitestream)
out[:to_path] = SqliteLitestream.to_path
puts JSON.generate(out)
