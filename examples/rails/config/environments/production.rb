Rails.application.configure do
  config.enable_reloading = false
  config.eager_load = true
  config.consider_all_requests_local = false
  config.action_controller.perform_caching = true
  # Heroku's ruby buildpack sets these two for the dynos.
  config.public_file_server.enabled = ENV["RAILS_SERVE_STATIC_FILES"].present?
  if ENV["RAILS_LOG_TO_STDOUT"].present?
    config.logger = ActiveSupport::TaggedLogging.new(ActiveSupport::Logger.new($stdout))
  end
  config.log_level = :info
  config.active_record.dump_schema_after_migration = false
end
