# In a Rails application (loaded by Bundler.require): registers the VFS before Active Record
# opens its first connection, so that database.yml may name `vfs=litestream` databases or
# paths served in config/initializers (SqliteLitestream.serve), whichever Rails version.
module SqliteLitestream
  class Railtie < ::Rails::Railtie
    initializer "sqlite_litestream.register", before: "active_record.initialize_database" do
      SqliteLitestream.register
    end
  end
end
