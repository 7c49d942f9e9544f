# frozen_string_literal: true

# ruby gemfile_lock.rb APP_DIR: what the Ruby buildpack reads from the app's Gemfile.lock,
# one "KEY VALUE" line each, every value made of [A-Za-z0-9._-] only (safe in bash):
#   gem NAME VERSION      each locked gem (a GEM, PATH, GIT or PLUGIN SOURCE spec line;
#                         VERSION without its platform: nokogiri 1.18.2, not -x86_64-linux)
#   ruby VERSION          RUBY VERSION's, when it is one (3.3.8 for "ruby 3.3.8p144")
#   bundled_with VERSION  BUNDLED WITH's, when there is one
# A lockfile Bundler could not read either gets one line on stderr, "Gemfile.lock ...",
# naming the problem and the fix, and exit status 1. The file is read only when it is a
# regular file (a fifo or /dev/zero never ends), and at most MAX_BYTES of it.
# Bundler's own parser (Bundler::LockfileParser) splits lines on \r?\n the same way.
module GemfileLock
  MAX_BYTES = 8 << 20  # examples/rails's lockfile is 3 KB; a large app's, tens of KB
  FIX = "regenerate it with bundle lock, commit it and push again"
  SECTION = /\A[A-Z][A-Z ]*\z/
  SOURCES = ["GEM", "PATH", "GIT", "PLUGIN SOURCE"].freeze
  SPEC = /\A {4}([A-Za-z0-9][A-Za-z0-9._-]*) \(([0-9][0-9A-Za-z.]*)(?:-[^)]*)?\)\z/
  BUNDLED = "BUNDLED WITH"
  CONFLICT = /\A(<<<<<<<|=======|>>>>>>>)( |\z)/
  KINDS = { "directory" => "a directory", "characterSpecial" => "a character device",
            "blockSpecial" => "a block device", "fifo" => "a fifo", "socket" => "a socket" }.freeze

  class Error < StandardError; end

  module_function

  # The lockfile's bytes, or Error when it is not a file Bundler could read.
  def text(path)
    unless File.exist?(path) || File.symlink?(path)
      raise Error, "Gemfile.lock is missing; run bundle lock where the Gemfile is, " \
                   "commit Gemfile.lock and push again"
    end
    what = kind(path)
    raise Error, "Gemfile.lock is #{what}, not a file; #{FIX}" if what
    data = File.open(path, "rb") { |f| f.read(MAX_BYTES + 1) } || +""
    return data if data.bytesize <= MAX_BYTES

    raise Error, "Gemfile.lock is over #{MAX_BYTES >> 20} MB, more than any lockfile " \
                 "Bundler writes; #{FIX}"
  rescue SystemCallError => e
    raise Error, "Gemfile.lock cannot be read (#{e.message.sub(/ @ .*/, "")}); #{FIX}"
  end

  # What the path is when it is not a regular file (links followed), else nil.
  def kind(path)
    what = begin
      stat = File.stat(path)
      stat.file? ? nil : KINDS.fetch(stat.ftype, "not a regular file")
    rescue Errno::ENOENT
      "which does not exist"
    rescue Errno::ELOOP
      "which loops"
    end
    return what unless what && File.symlink?(path)

    "a link to #{File.readlink(path).inspect}, #{what}"
  end

  # The facts above, as a hash: gems (name => version), ruby, bundled_with.
  def parse(data)
    found = { gems: {}, ruby: nil, bundled_with: nil }
    section = nil
    data.b.split("\n").each_with_index do |line, i|
      line = line.chomp("\r").force_encoding(Encoding::UTF_8)
      where = "line #{i + 1}"
      raise Error, "Gemfile.lock has a NUL byte (#{where}): it is binary, not a lockfile; #{FIX}" \
        if line.include?("\0")
      raise Error, "Gemfile.lock is not UTF-8 text (#{where}); #{FIX}" unless line.valid_encoding?
      if line.match?(CONFLICT)
        raise Error, "Gemfile.lock contains merge conflicts (#{where}); resolve them " \
                     "(git checkout HEAD -- Gemfile.lock, then bundle lock), commit and push again"
      end
      if line.match?(SECTION)
        section = line
        next
      end
      read_line(found, section, line)
    end
    found[:bundled_with] = bundled_with(data)
    found
  end

  # What follows the last BUNDLED WITH, as Bundler reads it (LockfileParser.bundled_with):
  # a version, or nothing. Bundler 2.3 (debian-12's) fails on anything else with
  # "Malformed version number string" and a bug report template; 2.6 ignores it.
  def bundled_with(data)
    at = data.rindex(BUNDLED) or return nil
    value = data.byteslice(at + BUNDLED.bytesize..).force_encoding(Encoding::UTF_8).strip
    return nil if value.empty?
    return value if Gem::Version.correct?(value)

    shown = value.length > 40 ? "#{value[0, 40]}..." : value
    raise Error, "Gemfile.lock has BUNDLED WITH followed by #{shown.inspect}, not a Bundler " \
                 "version; put the version there (bundle update --bundler writes it), " \
                 "commit Gemfile.lock and push again"
  end

  def read_line(found, section, line)
    if SOURCES.include?(section)
      spec = SPEC.match(line)
      found[:gems][spec[1]] ||= spec[2] if spec
    elsif section == "RUBY VERSION"
      found[:ruby] ||= line[/\A\s+ruby (\d+\.\d+\.\d+)/, 1]
    end
  end

  def lines(found)
    out = found[:gems].map { |name, version| "gem #{name} #{version}" }
    out << "ruby #{found[:ruby]}" if found[:ruby]
    out << "bundled_with #{found[:bundled_with]}" if found[:bundled_with]
    out
  end
end

if $PROGRAM_NAME == __FILE__
  begin
    found = GemfileLock.parse(GemfileLock.text(File.join(ARGV.fetch(0), "Gemfile.lock")))
    puts GemfileLock.lines(found)
  rescue GemfileLock::Error => e
    warn e.message
    exit 1
  end
end
