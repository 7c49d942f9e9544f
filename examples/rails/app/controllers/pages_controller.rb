# The page is computed per request: SQLite does the arithmetic, propshaft names the
# precompiled stylesheet.
class PagesController < ApplicationController
  def show
    answer = ActiveRecord::Base.connection.select_value("SELECT 6 * 7")
    render plain: "Rails #{Rails.version} on Ruby #{RUBY_VERSION} (#{Rails.env}): " \
                  "SQLite #{SQLite3::SQLITE_VERSION} says 6 * 7 = #{answer}; " \
                  "stylesheet #{helpers.stylesheet_path("application")}\n"
  end
end
