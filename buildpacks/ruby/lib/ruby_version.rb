# frozen_string_literal: true

# ruby ruby_version.rb APP_DIR [LOCKED]: the Ruby version the app asks for, against the
# running (the stack's) Ruby. Prints one line: "none", "ok SOURCE REQUEST" or
# "mismatch SOURCE REQUEST". Sources, in the order Heroku's buildpack trusts them: the
# Gemfile's `ruby` directive (Bundler's own reading, which Bundler also enforces), then
# .ruby-version, then the lockfile's RUBY VERSION (LOCKED, as lib/gemfile_lock.rb read it:
# bin/compile reads Gemfile.lock once). The last two record a version a developer used:
# they must agree on major.minor (what Debian's ruby package is).
require "bundler"

dir = ARGV.fetch(0)
have = Gem::Version.new(RUBY_VERSION)
minor = ->(v) { Gem::Version.new(v).segments.first(2) }

gemfile = File.join(dir, "Gemfile")
begin
  Dir.chdir(dir) do
    ruby = Bundler::Dsl.new.tap { |dsl| dsl.eval_gemfile(gemfile) }.instance_variable_get(:@ruby_version)
    if ruby
      request = ruby.versions.join(", ")
      ok = ruby.engine == "ruby" && Gem::Requirement.new(*ruby.versions).satisfied_by?(have)
      puts "#{ok ? "ok" : "mismatch"} Gemfile #{ruby.engine == "ruby" ? request : "#{ruby.engine} #{request}"}"
      exit
    end
  end
rescue Bundler::BundlerError, ScriptError, StandardError => e
  warn "Gemfile could not be read: #{e.message}"
  puts "invalid Gemfile"
  exit
end

file = File.join(dir, ".ruby-version")
if File.file?(file)
  request = File.read(file).scrub("?").strip.sub(/\Aruby-/, "")
  if request.match?(/\A\d+(\.\d+)*\z/)
    puts "#{minor.(request) == minor.(have)[0, minor.(request).length] ? "ok" : "mismatch"} .ruby-version #{request}"
  else
    puts "mismatch .ruby-version #{request}"
  end
  exit
end

locked = ARGV.fetch(1, "")
if locked.match?(/\A\d+\.\d+\.\d+\z/)
  puts "#{minor.(locked) == minor.(have) ? "ok" : "mismatch"} Gemfile.lock #{locked}"
  exit
end
puts "none"
